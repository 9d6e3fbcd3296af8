//! Where numbers go: text tables and histograms for people, JSON for programs.

pub mod event;
pub mod table;
