//! Where numbers go: text tables, histograms, plots and flame graphs for people; event
//! lines as text or JSON.

pub mod columns;
pub mod event;
pub mod flame;
pub mod plot;
pub mod table;
pub mod timeline;
