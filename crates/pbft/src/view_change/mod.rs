//! View changes without signatures (TOCS 2002 §4.5, Castro's thesis ch. 3).
//!
//! So far: the decision procedure that picks the new view's checkpoint and
//! requests, as a pure function with its own tests. The messages
//! (VIEW-CHANGE, VIEW-CHANGE-ACK, NEW-VIEW), timers and the replica's handlers
//! come with the view-change issue.

pub mod decision;

pub use decision::{decide, Choice, Entry, NewViewDecision, Undecided, ViewChangeInfo};
