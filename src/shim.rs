//! The shim that runs inside each pane.
