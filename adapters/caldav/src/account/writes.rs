//! Conditional writes of one resource (PUT with If-None-Match or If-Match,
//! DELETE) and what a refused PUT means.

use super::*;

impl Account {
    /// Creates `<calendar><name>.ics` unless it exists; answers the stored
    /// event and whether it already existed.
    pub async fn create(
        &self,
        calendar_id: &str,
        name: &str,
        ics: &str,
    ) -> Result<(pb::Event, bool), DavError> {
        let calendar = self.url("calendar_id", calendar_id)?;
        let url = calendar
            .join(&format!("{name}.ics"))
            .map_err(|_| Invalid::field("idempotency_key", "cannot name a CalDAV resource"))?;
        let resp = self.client.put(&url, ics, &PutCondition::Create).await?;
        let existed = match resp.status.as_u16() {
            200 | 201 | 204 => false,
            412 if !resp.names_condition("valid-calendar-data") => true,
            s => return Err(put_error(s, &resp.body)),
        };
        let zone = self.zone(&calendar).await.ok().flatten();
        let event = self.event(url.path(), zone).await?;
        Ok((event, existed))
    }

    /// Reads the data and etag of an event resource for a rewrite.
    pub async fn current(&self, href: &str) -> Result<(String, String), DavError> {
        let url = self.url("provider_event_id", href)?;
        let (data, etag) = self
            .client
            .get(&url)
            .await?
            .ok_or_else(|| DavError::NotFound("the event".into()))?;
        let etag = match etag {
            Some(e) => e,
            None => self
                .etag(&url)
                .await?
                .ok_or_else(|| DavError::NotFound("the event".into()))?,
        };
        Ok((data, etag))
    }

    /// Replaces an event resource if its etag is still `etag`.
    pub async fn replace(
        &self,
        calendar_id: &str,
        href: &str,
        ics: &str,
        etag: &str,
    ) -> Result<pb::Event, DavError> {
        self.put_matching(href, ics, etag).await?;
        let zone = self
            .zone(&self.url("calendar_id", calendar_id)?)
            .await
            .ok()
            .flatten();
        self.event(href, zone).await
    }

    /// Rewrites a resource, conditional on `etag` (412 → a version
    /// conflict carrying the current etag).
    pub async fn put_matching(&self, href: &str, ics: &str, etag: &str) -> Result<(), DavError> {
        let url = self.url("provider_event_id", href)?;
        let resp = self
            .client
            .put(&url, ics, &PutCondition::Match(etag.to_string()))
            .await?;
        match resp.status.as_u16() {
            200 | 201 | 204 => Ok(()),
            412 if !resp.names_condition("valid-calendar-data") => Err(DavError::VersionConflict {
                current: self.etag(&url).await.ok().flatten(),
            }),
            s => Err(put_error(s, &resp.body)),
        }
    }

    /// Deletes an event resource, conditional on `etag` when given.
    pub async fn delete(&self, href: &str, etag: Option<&str>) -> Result<(), DavError> {
        let url = self.url("provider_event_id", href)?;
        let resp = self.client.delete(&url, etag).await?;
        match resp.status.as_u16() {
            200 | 202 | 204 => Ok(()),
            404 | 410 => Err(DavError::NotFound("the event".into())),
            412 => Err(DavError::VersionConflict {
                current: self.etag(&url).await.ok().flatten(),
            }),
            403 => Err(DavError::Forbidden(
                "deleting the event was refused (read-only calendar?)".into(),
            )),
            s => Err(DavError::Protocol(format!("DELETE answered {s}"))),
        }
    }
}

/// What a refused PUT means.
fn put_error(status: u16, body: &str) -> DavError {
    let invalid_data = [
        "valid-calendar-data",
        "valid-calendar-object-resource",
        "supported-calendar",
    ]
    .iter()
    .any(|c| body.contains(c));
    match status {
        400 | 415 | 422 => Invalid::field(
            "event",
            "the CalDAV server refused the event's iCalendar data",
        )
        .into(),
        412 | 403 | 409 if invalid_data => Invalid::field(
            "event",
            "the CalDAV server refused the event's iCalendar data",
        )
        .into(),
        403 if body.contains("no-uid-conflict") => DavError::Invalid(Invalid::field(
            "idempotency_key",
            "another event in the calendar uses this UID",
        )),
        403 => DavError::Forbidden("writing the event was refused (read-only calendar?)".into()),
        404 | 409 => DavError::NotFound("the calendar".into()),
        s => DavError::Protocol(format!("PUT answered {s}")),
    }
}
