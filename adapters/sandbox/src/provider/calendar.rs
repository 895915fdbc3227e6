//! One calendar's units and journal: versions, idempotent inserts,
//! replacements, exceptions of series and removals, each recorded in the
//! journal that sync cursors read.

use super::*;

impl Calendar {
    pub(super) fn new(
        id: String,
        name: String,
        primary: bool,
        read_only: bool,
        color: &'static str,
    ) -> Self {
        Calendar {
            id,
            name,
            primary,
            read_only,
            time_zone: "UTC".into(),
            color,
            units: BTreeMap::new(),
            keys: HashMap::new(),
            versions: 0,
            journal: VecDeque::new(),
            head: 0,
            retained_from: 0,
        }
    }

    pub(super) fn zone(&self) -> Option<Tz> {
        time::parse_zone(&self.time_zone).ok()
    }

    pub(super) fn next_version(&mut self) -> String {
        self.versions += 1;
        format!("v{}", self.versions)
    }

    pub(super) fn record(&mut self, key: &str, before: Option<Unit>, retention: usize) {
        self.head += 1;
        self.journal.push_back(Entry {
            seq: self.head,
            key: key.to_string(),
            before,
        });
        while self.journal.len() > retention {
            if let Some(e) = self.journal.pop_front() {
                self.retained_from = e.seq;
            }
        }
    }

    pub(super) fn to_pb(&self) -> pb::Calendar {
        pb::Calendar {
            calendar_id: self.id.clone(),
            name: self.name.clone(),
            primary: self.primary,
            read_only: self.read_only,
            time_zone: self.time_zone.clone(),
            color: self.color.to_string(),
            ..Default::default()
        }
    }

    /// The series and original start an instance id names, when the series
    /// produces that instance and it was not deleted.
    pub(super) fn find_instance(&self, id: &str) -> Option<(String, Boundary)> {
        let (series, original) = recurrence::parse_instance_id(id)?;
        let unit = self.units.get(series)?;
        if !unit.is_series() || unit.deleted_instances.contains(id) {
            return None;
        }
        recurrence::is_occurrence(&unit.event, original).then(|| (series.to_string(), original))
    }

    /// Stores a new unit under `id`.
    pub(super) fn insert_unit(
        &mut self,
        id: String,
        mut event: Event,
        key: Option<String>,
        now: DateTime<Utc>,
        retention: usize,
    ) -> Event {
        normalize(&mut event);
        event.provider_event_id = id.clone();
        event.calendar_id = self.id.clone();
        event.version = self.next_version();
        event.created_at = Some(ts(now));
        event.updated_at = Some(ts(now));
        event.recurrence_link = None;
        if event.ical_uid.is_empty() {
            event.ical_uid = format!("{id}@sandbox.calbridge");
        }
        if let Some(k) = &key {
            self.keys.insert(k.clone(), id.clone());
        }
        self.units.insert(id.clone(), Unit::new(event.clone(), key));
        self.record(&id, None, retention);
        event
    }

    /// Replaces the fields of an existing unit.
    pub(super) fn replace_unit(
        &mut self,
        id: &str,
        mut event: Event,
        expected_version: &str,
        now: DateTime<Utc>,
        retention: usize,
    ) -> Result<Event> {
        let unit = self.units.get(id).ok_or(ProviderError::EventNotFound)?;
        check_version(expected_version, &unit.event.version)?;
        validate(&event, "event")?;
        let before = unit.clone();
        let version = self.next_version();
        let calendar_id = self.id.clone();
        let unit = self.units.get_mut(id).expect("checked above");
        let old = &unit.event;
        if event.client_event_id.is_empty() {
            event.client_event_id = old.client_event_id.clone();
        }
        normalize(&mut event);
        event.provider_event_id = id.to_string();
        event.calendar_id = calendar_id;
        event.ical_uid = old.ical_uid.clone();
        event.created_at = old.created_at;
        event.updated_at = Some(ts(now));
        event.version = version;
        event.recurrence_link = None;
        unit.event = event;
        if !unit.is_series() {
            unit.exceptions.clear();
            unit.deleted_instances.clear();
        }
        let out = unit.event.clone();
        self.record(id, Some(before), retention);
        Ok(out)
    }

    /// Creates or replaces the exception of one instance of a series.
    pub(super) fn put_exception(
        &mut self,
        series: &str,
        original: Boundary,
        mut event: Event,
        expected_version: &str,
        now: DateTime<Utc>,
        retention: usize,
    ) -> Result<Event> {
        let unit = self.units.get(series).ok_or(ProviderError::EventNotFound)?;
        if !unit.is_series() || !recurrence::is_occurrence(&unit.event, original) {
            return Err(Invalid::field(
                "event.recurrence_link.original_start",
                "is not an original start of an instance of the series",
            )
            .into());
        }
        let id = recurrence::instance_id(series, original);
        let previous = unit.exceptions.get(&id);
        let current = previous.map_or(&unit.event.version, |e| &e.version);
        check_version(expected_version, current)?;
        event.recurrence.clear();
        validate(&event, "event")?;
        let before = unit.clone();
        let version = self.next_version();
        let calendar_id = self.id.clone();
        let unit = self.units.get_mut(series).expect("checked above");
        let master = &unit.event;
        let previous = unit.exceptions.get(&id);
        if event.client_event_id.is_empty() {
            event.client_event_id = previous
                .map_or(&master.client_event_id, |p| &p.client_event_id)
                .clone();
        }
        normalize(&mut event);
        event.provider_event_id = id.clone();
        event.calendar_id = calendar_id;
        event.ical_uid = master.ical_uid.clone();
        event.version = version;
        event.created_at = previous.and_then(|p| p.created_at).or(Some(ts(now)));
        event.updated_at = Some(ts(now));
        event.recurrence_link = Some(RecurrenceLink {
            series_event_id: series.to_string(),
            original_start: Some(original_start_time(master, original)),
        });
        unit.deleted_instances.remove(&id);
        unit.exceptions.insert(id, event.clone());
        self.record(series, Some(before), retention);
        Ok(event)
    }

    /// Replaces an event or, for an instance id, its exception.
    pub(super) fn update(
        &mut self,
        id: &str,
        event: Event,
        expected_version: &str,
        now: DateTime<Utc>,
        retention: usize,
    ) -> Result<Event> {
        if self.units.contains_key(id) {
            return self.replace_unit(id, event, expected_version, now, retention);
        }
        let (series, original) = self.find_instance(id).ok_or(ProviderError::EventNotFound)?;
        self.put_exception(&series, original, event, expected_version, now, retention)
    }

    /// Deletes an event or, for an instance id, that one instance.
    pub(super) fn remove(
        &mut self,
        id: &str,
        expected_version: &str,
        retention: usize,
    ) -> Result<()> {
        if let Some(unit) = self.units.get(id) {
            check_version(expected_version, &unit.event.version)?;
            let before = self.units.remove(id).expect("checked above");
            if let Some(k) = &before.idempotency_key {
                self.keys.remove(k);
            }
            self.record(id, Some(before), retention);
            return Ok(());
        }
        let (series, _) = self.find_instance(id).ok_or(ProviderError::EventNotFound)?;
        let unit = self.units.get_mut(&series).expect("found above");
        let current = unit
            .exceptions
            .get(id)
            .map_or(&unit.event.version, |e| &e.version);
        check_version(expected_version, current)?;
        let before = unit.clone();
        unit.exceptions.remove(id);
        unit.deleted_instances.insert(id.to_string());
        self.record(&series, Some(before), retention);
        Ok(())
    }
}
