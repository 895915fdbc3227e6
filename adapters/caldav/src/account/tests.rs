//! Tests of reading WebDAV answers: calendars, free/busy, home sets and server URLs.

use super::discovery::{calendar_of, home_set};
use super::*;
use crate::client::parse_multistatus;

#[test]
fn calendars_keep_event_collections_with_their_properties() {
    let xml = r#"<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:A="http://apple.com/ns/ical/">
<response><href>/1/calendars/</href><propstat><prop><resourcetype><collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/1/calendars/work/</href><propstat><prop><resourcetype><collection/><C:calendar/></resourcetype><displayname>Work</displayname><A:calendar-color>#1E88E5FF</A:calendar-color>
<C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
<current-user-privilege-set><privilege><read/></privilege></current-user-privilege-set>
<C:calendar-timezone>BEGIN:VCALENDAR&#13;
VERSION:2.0&#13;
PRODID:x&#13;
BEGIN:VTIMEZONE&#13;
TZID:Europe/London&#13;
END:VTIMEZONE&#13;
END:VCALENDAR&#13;
</C:calendar-timezone></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/1/calendars/tasks/</href><propstat><prop><resourcetype><collection/><C:calendar/></resourcetype><C:supported-calendar-component-set><C:comp name="VTODO"/></C:supported-calendar-component-set></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/1/calendars/my%20cal/</href><propstat><prop><resourcetype><collection/><C:calendar/></resourcetype><current-user-privilege-set><privilege><all/></privilege></current-user-privilege-set></prop><status>HTTP/1.1 200 OK</status></propstat></response>
</multistatus>"#;
    let ms = parse_multistatus(xml).unwrap();
    let cals: Vec<pb::Calendar> = ms.responses.iter().filter_map(calendar_of).collect();
    assert_eq!(cals.len(), 2, "{cals:?}");
    assert_eq!(cals[0].calendar_id, "/1/calendars/work/");
    assert_eq!(cals[0].name, "Work");
    assert_eq!(cals[0].color, "#1e88e5");
    assert!(cals[0].read_only);
    assert_eq!(cals[0].time_zone, "Europe/London");
    assert_eq!(cals[1].name, "my cal");
    assert!(!cals[1].read_only);
}

#[test]
fn a_vfreebusy_answer_gives_busy_periods() {
    let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VFREEBUSY\r\nDTSTAMP:20260101T000000Z\r\n\
FREEBUSY:20260105T090000Z/20260105T100000Z,20260106T090000Z/PT30M\r\n\
FREEBUSY;FBTYPE=BUSY-TENTATIVE:20260107T090000Z/20260107T100000Z\r\n\
FREEBUSY;FBTYPE=FREE:20260108T090000Z/20260108T100000Z\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n";
    let p = parse_free_busy(ics).unwrap();
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(p[1].1 - p[1].0, chrono::Duration::minutes(30));
    assert_eq!(p[2].2, BusyStatus::Tentative);
}

#[test]
fn icloud_hosts_get_small_multiget_batches() {
    let url = |s: &str| Url::parse(s).unwrap();
    assert_eq!(
        multiget_batch_for(&url("https://p12-caldav.icloud.com:443/1/calendars/")),
        ICLOUD_MULTIGET_BATCH
    );
    assert_eq!(
        multiget_batch_for(&url("https://CALDAV.iCloud.com./")),
        ICLOUD_MULTIGET_BATCH
    );
    assert_eq!(
        multiget_batch_for(&url("https://evilicloud.com/")),
        MULTIGET_BATCH
    );
    assert_eq!(
        multiget_batch_for(&url("http://127.0.0.1:5232/user/")),
        MULTIGET_BATCH
    );
    const { assert!(ICLOUD_MULTIGET_BATCH <= 50 && ICLOUD_MULTIGET_BATCH >= 10) };
}

#[test]
fn the_home_set_is_read_whatever_href_the_principal_answers_under() {
    let base = Url::parse("https://caldav.icloud.com/123/principal/").unwrap();
    let xml = r#"<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/principal/</href><propstat><prop><C:calendar-home-set><href>https://p12-caldav.icloud.com:443/123/calendars/</href></C:calendar-home-set></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
    let home = home_set(&base, &parse_multistatus(xml).unwrap()).unwrap();
    assert_eq!(
        home.as_str(),
        "https://p12-caldav.icloud.com/123/calendars/"
    );
    // An answer without the property (iCloud, now and then) is no home.
    let without = r#"<multistatus xmlns="DAV:"><response><href>/123/principal/</href><propstat><prop/><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
    assert_eq!(home_set(&base, &parse_multistatus(without).unwrap()), None);
}

#[test]
fn server_urls_get_a_scheme_and_must_have_a_host() {
    assert_eq!(
        parse_server_url("caldav.icloud.com").unwrap().as_str(),
        "https://caldav.icloud.com/"
    );
    assert!(parse_server_url("ftp://x/").is_err());
}
