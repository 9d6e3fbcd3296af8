//! Where numbers go: text tables, histograms and plots for people; event lines as text or
//! JSON.

pub mod columns;
pub mod event;
pub mod plot;
pub mod table;
