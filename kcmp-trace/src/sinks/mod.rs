//! Where numbers go: text tables, histograms and plots for people, JSON for programs.

pub mod event;
pub mod json;
pub mod plot;
pub mod table;
