//! `tally top`: the live operator console. State and updates in [`app`], pure drawing in [`ui`],
//! the event loop and the network feed in [`run`].

pub mod app;
pub mod run;
pub mod ui;
