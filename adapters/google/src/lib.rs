//! The calbridge Google Calendar adapter.
