//! `marvel top`: a live dashboard of every team in the terminal. [`model`]
//! is what to show, a pure function of the daemon's views and events;
//! [`ui`] is the dashboard's own state and its keys; [`view`] draws a
//! frame; [`app`] runs the terminal and the threads that talk to the
//! daemon, driven by its event stream.

mod app;
mod model;
mod ui;
mod view;

pub use app::run;
