//! Graph's JSON shapes, as far as the adapter reads them. Every field is
//! optional: a missing one is handled where it is used, never by a panic.

use serde::Deserialize;
use serde_json::Value;

/// A collection page (`value` plus paging links).
#[derive(Debug, Clone, Deserialize)]
pub struct Collection<T> {
    /// The items.
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    /// The next page of this round.
    #[serde(rename = "@odata.nextLink")]
    pub next_link: Option<String>,
    /// The link that starts the next delta round.
    #[serde(rename = "@odata.deltaLink")]
    pub delta_link: Option<String>,
}

/// `emailAddress`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EmailAddress {
    /// The name.
    pub name: Option<String>,
    /// The address.
    pub address: Option<String>,
}

/// A `recipient` (`organizer`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    /// The address.
    pub email_address: Option<EmailAddress>,
}

/// A calendar.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Calendar {
    /// The id.
    pub id: Option<String>,
    /// The name.
    pub name: Option<String>,
    /// The colour name (`auto`, `lightBlue`, ...).
    pub color: Option<String>,
    /// The colour as `#rrggbb`, when set.
    pub hex_color: Option<String>,
    /// The mailbox's default calendar.
    pub is_default_calendar: Option<bool>,
    /// Whether the user may write it.
    pub can_edit: Option<bool>,
    /// The owner.
    pub owner: Option<EmailAddress>,
}

/// `dateTimeTimeZone`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DateTimeTimeZone {
    /// Local date-time, no offset.
    pub date_time: Option<String>,
    /// Windows or IANA zone name.
    pub time_zone: Option<String>,
}

/// `itemBody`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    /// `text` or `html`.
    pub content_type: Option<String>,
    /// The content.
    pub content: Option<String>,
}

/// `location`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// The name shown.
    pub display_name: Option<String>,
}

/// `responseStatus`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponseStatus {
    /// `none`, `organizer`, `tentativelyAccepted`, `accepted`, `declined`,
    /// `notResponded`.
    pub response: Option<String>,
}

/// An attendee.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attendee {
    /// `required`, `optional`, `resource`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The response.
    pub status: Option<ResponseStatus>,
    /// Who.
    pub email_address: Option<EmailAddress>,
}

/// An event, or a `@removed` entry of a delta round.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The id.
    pub id: Option<String>,
    /// Present on delta entries of removed items.
    #[serde(rename = "@removed")]
    pub removed: Option<Value>,
    /// `W/"<changeKey>"`.
    #[serde(rename = "@odata.etag")]
    pub etag: Option<String>,
    /// The change key.
    pub change_key: Option<String>,
    /// The iCalendar UID (differs per occurrence).
    #[serde(rename = "iCalUId")]
    pub ical_uid: Option<String>,
    /// The title.
    pub subject: Option<String>,
    /// The body.
    pub body: Option<ItemBody>,
    /// Start.
    pub start: Option<DateTimeTimeZone>,
    /// End.
    pub end: Option<DateTimeTimeZone>,
    /// The zone the event was created in.
    pub original_start_time_zone: Option<String>,
    /// All-day (midnight to midnight).
    pub is_all_day: Option<bool>,
    /// Cancelled by its organizer.
    pub is_cancelled: Option<bool>,
    /// `free`, `tentative`, `busy`, `oof`, `workingElsewhere`, `unknown`.
    pub show_as: Option<String>,
    /// `singleInstance`, `occurrence`, `exception`, `seriesMaster`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The series of an occurrence or exception.
    pub series_master_id: Option<String>,
    /// The original start (UTC) of an occurrence or exception.
    pub original_start: Option<String>,
    /// The location.
    pub location: Option<Location>,
    /// Attendees.
    pub attendees: Option<Vec<Attendee>>,
    /// The organizer.
    pub organizer: Option<Recipient>,
    /// Created.
    pub created_date_time: Option<String>,
    /// Last modified.
    pub last_modified_date_time: Option<String>,
    /// A series master's `patternedRecurrence`.
    pub recurrence: Option<Value>,
    /// Extended properties asked for with `$expand`.
    pub single_value_extended_properties: Option<Vec<ExtendedProperty>>,
}

/// A single-value extended property.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtendedProperty {
    /// `String {GUID} Name NAME`.
    pub id: Option<String>,
    /// The value.
    pub value: Option<String>,
}

/// `/me`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The directory id.
    pub id: Option<String>,
    /// The sign-in name.
    pub user_principal_name: Option<String>,
    /// The mail address.
    pub mail: Option<String>,
}

/// A change-notification subscription (what the adapter reads of it).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The subscription id.
    pub id: String,
    /// When Graph ends it (UTC).
    #[serde(default)]
    pub expiration_date_time: Option<String>,
}

/// `/me/mailboxSettings` (the part read).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailboxSettings {
    /// The user's zone (Windows or IANA name).
    pub time_zone: Option<String>,
}

/// Graph's error body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: Option<ErrorDetail>,
}

/// Graph's error detail.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorDetail {
    /// The code (`ErrorItemNotFound`, `SyncStateNotFound`, ...).
    pub code: Option<String>,
}

impl ErrorBody {
    /// The error code of a body, empty when unreadable.
    pub fn code(body: &[u8]) -> String {
        serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .and_then(|b| b.error)
            .and_then(|e| e.code)
            .unwrap_or_default()
    }
}
