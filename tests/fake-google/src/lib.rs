//! A fake of Google Calendar API v3 and Google's OAuth 2.0 endpoints.
