//! The CalDAV wire: WebDAV requests (PROPFIND, REPORT, GET, PUT, DELETE)
//! with pre-emptive Basic authentication and redirects followed by hand (so
//! credentials reach the partition host iCloud redirects to, and PROPFIND
//! stays a PROPFIND), and the parsing of `207 Multi-Status` answers into a
//! small owned XML tree. Base URLs come from the caller, never from
//! constants, so tests point the client at local servers.
//!
//! Every server is hostile until checked ([`crate::egress`]): each hop is
//! checked against the egress policy and must stay on the account's site,
//! bodies are read in chunks up to a size cap, and XML is parsed without
//! DTDs, with a bounded node count and nesting depth.
//!
//! Each request sent (each redirect hop too) is a span and a duration
//! sample ([`ProviderRequest`]) under the provider (`icloud` for iCloud's
//! hosts, `caldav` otherwise) and a fixed operation name
//! (`PROPFIND.principal`, `REPORT.calendar-query`, `PUT`, ...), with its
//! status or error type; a `Retry-After` of a 429 or 503 is recorded too.

use std::time::Duration;

use calbridge_runtime::metrics::{self, ProviderRequest};
use calbridge_runtime::Secret;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use tracing::Instrument;

use crate::egress::{blocked_in, same_site, Egress};
use crate::error::DavError;

/// The `DAV:` namespace.
pub const NS_DAV: &str = "DAV:";
/// The CalDAV namespace.
pub const NS_CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
/// The CalendarServer extensions namespace (getctag).
pub const NS_CS: &str = "http://calendarserver.org/ns/";
/// Apple's iCal namespace (calendar-color).
pub const NS_APPLE: &str = "http://apple.com/ns/ical/";

/// How many redirects one request may follow.
const MAX_REDIRECTS: usize = 5;

/// The deepest XML element nesting accepted in an answer. WebDAV answers
/// nest about eight levels (multistatus, response, propstat, prop,
/// property, and a few inside properties such as privileges).
pub const MAX_XML_DEPTH: usize = 32;

/// The most XML nodes (elements, text, attributes' owners) accepted in one
/// answer: about a dozen per calendar object, so calendars of over 100,000
/// objects still parse, while memory stays bounded.
pub const MAX_XML_NODES: u32 = 2_000_000;

/// The largest answer body read by default, in bytes (see
/// [`crate::Config::max_response_bytes`]).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 << 20;

/// How the adapter's HTTP requests are bounded: where they may go and how
/// much of an answer is read. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Which addresses may be reached.
    pub egress: Egress,
    /// The largest body read; a longer one fails the request
    /// ([`DavError::TooLarge`]).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            egress: Egress::default(),
            max_body: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A WebDAV client for one account (its user name and password). Cheap to
/// build per call: the connection pool lives in the shared `reqwest::Client`.
pub struct DavClient {
    http: reqwest::Client,
    limits: Limits,
    /// The provider in spans and metrics: `icloud` for iCloud's hosts,
    /// `caldav` otherwise.
    provider: &'static str,
    /// The URL whose site every request must stay on: the server URL
    /// during discovery, the calendar home afterwards.
    anchor: Url,
    username: String,
    password: Secret,
}

/// A response after redirects: the final URL, status, headers and body.
#[derive(Debug)]
pub struct RawResponse {
    /// The URL that answered (after redirects).
    pub url: Url,
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, as text.
    pub body: String,
}

impl RawResponse {
    /// The `ETag` header, verbatim.
    pub fn etag(&self) -> Option<String> {
        self.headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// True when the body names the WebDAV precondition `name`.
    pub fn names_condition(&self, name: &str) -> bool {
        self.body.contains(name)
    }
}

/// The precondition of a PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// `If-None-Match: *`: only create.
    Create,
    /// `If-Match: <etag>`: only replace this version.
    Match(String),
}

/// Builds the shared HTTP client: gzip accepted, no automatic redirects
/// (see [`DavClient`]), a per-request timeout (which covers reading the
/// body, so a trickling server costs one request's timeout), no proxy, and
/// the egress policy's resolver.
pub fn http_client(timeout: Duration, egress: &Egress) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .no_proxy()
        .dns_resolver(egress.resolver())
        .user_agent(concat!(
            "calbridge-adapter-caldav/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .expect("the HTTP client configuration is valid")
}

impl DavClient {
    /// A client sending `username` and `password` with every request, to
    /// `anchor`'s site only.
    pub fn new(
        http: reqwest::Client,
        limits: Limits,
        anchor: Url,
        username: &str,
        password: &str,
    ) -> Self {
        DavClient {
            http,
            limits,
            provider: provider_of(&anchor),
            anchor,
            username: username.to_string(),
            password: Secret::new(password),
        }
    }

    /// The URL requests must stay on the site of.
    pub fn anchor(&self) -> &Url {
        &self.anchor
    }

    /// The egress policy and body cap.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The provider as spans and metrics name it: `icloud` or `caldav`.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Sends a request, following redirects with the same method, body and
    /// credentials as long as they stay on the anchor's site (never from
    /// `https` to `http`); maps authentication failures, rate limits and
    /// outages. The body is read up to the size cap. `operation` names the
    /// request in metrics: a fixed name such as `PROPFIND.principal` or
    /// `PUT`, never a path.
    pub async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        headers: &[(&str, String)],
        body: Option<&str>,
    ) -> Result<RawResponse, DavError> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            if !same_site(&self.anchor, &url) {
                return Err(DavError::Refused(
                    "the server sent the request to another site; the account's credentials are never sent there"
                        .into(),
                ));
            }
            self.limits
                .egress
                .check_url(&url)
                .map_err(|b| DavError::Refused(b.0))?;
            // One span and one duration sample per request sent (a
            // redirect hop is one), closed at the end of this iteration,
            // once the body is read.
            let mut sent = ProviderRequest::start(self.provider, operation, &method, &url);
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .basic_auth(&self.username, Some(self.password.expose()));
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            if let Some(b) = body {
                req = req.body(b.to_string());
            }
            let span = sent.span().clone();
            let answer = req.send().instrument(span).await;
            let mut resp = answer.map_err(|e| {
                if let Some(b) = blocked_in(&e) {
                    sent.error("blocked");
                    return DavError::Refused(b.0);
                }
                sent.error(if e.is_timeout() { "timeout" } else { "connect" });
                DavError::Unavailable(if e.is_timeout() {
                    "request timed out".to_string()
                } else {
                    "cannot reach the server".to_string()
                })
            })?;
            let status = resp.status();
            sent.status(status.as_u16());
            if status.is_redirection() {
                if let Some(next) = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                {
                    tracing::debug!(status = status.as_u16(), "following redirect");
                    url = next;
                    continue;
                }
            }
            let headers = resp.headers().clone();
            if matches!(status.as_u16(), 429 | 503) {
                if let Some(d) = retry_after(&headers) {
                    metrics::retry_after(self.provider, d);
                }
            }
            if resp
                .content_length()
                .is_some_and(|n| n > self.limits.max_body as u64)
            {
                sent.error("too_large");
                return Err(DavError::TooLarge(self.limits.max_body));
            }
            let mut bytes: Vec<u8> = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if bytes.len() + chunk.len() > self.limits.max_body {
                            sent.error("too_large");
                            return Err(DavError::TooLarge(self.limits.max_body));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        sent.error(if e.is_timeout() { "timeout" } else { "body" });
                        return Err(DavError::Unavailable(if e.is_timeout() {
                            "the response body timed out".into()
                        } else {
                            "the response body was cut off".into()
                        }));
                    }
                }
            }
            let body = match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            };
            return check_common(RawResponse {
                url,
                status,
                headers,
                body,
            });
        }
        Err(DavError::Protocol("too many redirects".into()))
    }

    /// `PROPFIND` with an explicit `Depth` and a `<D:prop>` body listing
    /// `props` (XML, with the `D`, `C`, `CS` and `A` prefixes bound);
    /// `operation` names it in metrics (`PROPFIND.principal`, ...).
    pub async fn propfind(
        &self,
        operation: &'static str,
        url: &Url,
        depth: u8,
        props: &str,
    ) -> Result<(Url, Multistatus), DavError> {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CS="http://calendarserver.org/ns/" xmlns:A="http://apple.com/ns/ical/"><D:prop>{props}</D:prop></D:propfind>"#
        );
        let resp = self
            .send(
                operation,
                Method::from_bytes(b"PROPFIND").expect("valid method"),
                url.clone(),
                &[
                    ("Depth", depth.to_string()),
                    ("Content-Type", XML.to_string()),
                ],
                Some(&body),
            )
            .await?;
        match resp.status.as_u16() {
            207 => Ok((resp.url.clone(), parse_multistatus(&resp.body)?)),
            404 | 410 => Err(DavError::NotFound("the collection".into())),
            403 => Err(DavError::Forbidden("PROPFIND refused".into())),
            s => Err(DavError::Protocol(format!("PROPFIND answered {s}"))),
        }
    }

    /// `REPORT` with an XML body; `depth` is sent only when given. The raw
    /// answer is returned: callers interpret report-specific failures.
    /// `operation` names it in metrics (`REPORT.sync-collection`, ...).
    pub async fn report(
        &self,
        operation: &'static str,
        url: &Url,
        depth: Option<u8>,
        body: &str,
    ) -> Result<RawResponse, DavError> {
        let mut headers = vec![("Content-Type", XML.to_string())];
        if let Some(d) = depth {
            headers.push(("Depth", d.to_string()));
        }
        self.send(
            operation,
            Method::from_bytes(b"REPORT").expect("valid method"),
            url.clone(),
            &headers,
            Some(body),
        )
        .await
    }

    /// `GET` of one object: its data and etag, `None` when it does not
    /// exist.
    pub async fn get(&self, url: &Url) -> Result<Option<(String, Option<String>)>, DavError> {
        let resp = self
            .send("GET", Method::GET, url.clone(), &[], None)
            .await?;
        match resp.status.as_u16() {
            200 => {
                let etag = resp.etag();
                Ok(Some((resp.body, etag)))
            }
            404 | 410 => Ok(None),
            403 => Err(DavError::Forbidden("reading the event was refused".into())),
            s => Err(DavError::Protocol(format!("GET answered {s}"))),
        }
    }

    /// `PUT` of one calendar object under a precondition.
    pub async fn put(
        &self,
        url: &Url,
        data: &str,
        condition: &PutCondition,
    ) -> Result<RawResponse, DavError> {
        let mut headers = vec![("Content-Type", "text/calendar; charset=utf-8".to_string())];
        match condition {
            PutCondition::Create => headers.push(("If-None-Match", "*".to_string())),
            PutCondition::Match(etag) => headers.push(("If-Match", etag.clone())),
        }
        self.send("PUT", Method::PUT, url.clone(), &headers, Some(data))
            .await
    }

    /// `DELETE` of one object, with `If-Match` when `etag` is given.
    pub async fn delete(&self, url: &Url, etag: Option<&str>) -> Result<RawResponse, DavError> {
        let headers: Vec<(&str, String)> = etag
            .map(|e| vec![("If-Match", e.to_string())])
            .unwrap_or_default();
        self.send("DELETE", Method::DELETE, url.clone(), &headers, None)
            .await
    }
}

const XML: &str = "application/xml; charset=utf-8";

/// The provider of an account whose requests stay on `anchor`'s site.
fn provider_of(anchor: &Url) -> &'static str {
    if crate::account::is_icloud_host(anchor) {
        "icloud"
    } else {
        "caldav"
    }
}

/// A `Retry-After` in delta seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Maps the answers every request treats the same way.
fn check_common(resp: RawResponse) -> Result<RawResponse, DavError> {
    match resp.status.as_u16() {
        401 => Err(DavError::WrongCredentials),
        429 | 503 => Err(DavError::RateLimited {
            retry_after: retry_after(&resp.headers),
        }),
        s if s >= 500 => Err(DavError::Unavailable(format!("the server answered {s}"))),
        _ => Ok(resp),
    }
}

/// Reads an `ETag` header value as given (strong or weak) for `If-Match`.
pub fn header_value(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(v).ok()
}

/// An XML element, owned: namespace, local name, direct text and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The namespace URI (empty when none).
    pub ns: String,
    /// The local name.
    pub name: String,
    /// The element's own text (text and CDATA children, concatenated).
    pub text: String,
    /// Attributes, by local name.
    pub attrs: Vec<(String, String)>,
    /// Child elements, in order.
    pub children: Vec<Element>,
}

impl Element {
    /// True when this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child `{ns}name`.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// True when `{ns}name` occurs anywhere below this element.
    pub fn contains(&self, ns: &str, name: &str) -> bool {
        self.children
            .iter()
            .any(|c| c.is(ns, name) || c.contains(ns, name))
    }

    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed text of the first `D:href` child.
    pub fn href(&self) -> Option<&str> {
        self.child(NS_DAV, "href").map(|h| h.text.trim())
    }

    fn from_node(node: roxmltree::Node<'_, '_>) -> Element {
        let mut text = String::new();
        let mut children = Vec::new();
        for c in node.children() {
            if c.is_element() {
                children.push(Element::from_node(c));
            } else if c.is_text() {
                text.push_str(c.text().unwrap_or(""));
            }
        }
        Element {
            ns: node.tag_name().namespace().unwrap_or("").to_string(),
            name: node.tag_name().name().to_string(),
            text,
            attrs: node
                .attributes()
                .map(|a| (a.name().to_string(), a.value().to_string()))
                .collect(),
            children,
        }
    }
}

/// One `D:response` of a multistatus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DavResponse {
    /// The `D:href`, verbatim.
    pub href: String,
    /// The response-level status (e.g. 404 for a removed member), if any.
    pub status: Option<u16>,
    /// The properties found (from `2xx` propstats).
    pub props: Vec<Element>,
}

impl DavResponse {
    /// A found property `{ns}name`.
    pub fn prop(&self, ns: &str, name: &str) -> Option<&Element> {
        self.props.iter().find(|p| p.is(ns, name))
    }

    /// A found property's trimmed text.
    pub fn prop_text(&self, ns: &str, name: &str) -> Option<&str> {
        self.prop(ns, name).map(|p| p.text.trim())
    }
}

/// A parsed `207 Multi-Status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Multistatus {
    /// The responses, in document order.
    pub responses: Vec<DavResponse>,
    /// The top-level `D:sync-token` (sync-collection answers).
    pub sync_token: Option<String>,
}

/// Parses a multistatus body. The `Content-Type` is never trusted; DTDs
/// are refused (no entity expansion), and so are answers of more than
/// [`MAX_XML_NODES`] nodes or nested deeper than [`MAX_XML_DEPTH`].
pub fn parse_multistatus(xml: &str) -> Result<Multistatus, DavError> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, options)
        .map_err(|e| DavError::Protocol(format!("the multistatus is not usable XML: {e}")))?;
    check_depth(&doc)?;
    let root = Element::from_node(doc.root_element());
    if !root.is(NS_DAV, "multistatus") {
        return Err(DavError::Protocol(format!(
            "expected a DAV:multistatus, got {}",
            root.name
        )));
    }
    let mut out = Multistatus {
        sync_token: root
            .child(NS_DAV, "sync-token")
            .map(|t| t.text.trim().to_string()),
        ..Default::default()
    };
    for r in root.children_named(NS_DAV, "response") {
        let mut resp = DavResponse {
            href: r.href().unwrap_or("").to_string(),
            status: r.child(NS_DAV, "status").and_then(|s| status_code(&s.text)),
            props: Vec::new(),
        };
        for ps in r.children_named(NS_DAV, "propstat") {
            let ok = ps
                .child(NS_DAV, "status")
                .and_then(|s| status_code(&s.text))
                .is_some_and(|c| (200..300).contains(&c));
            if let (true, Some(prop)) = (ok, ps.child(NS_DAV, "prop")) {
                resp.props.extend(prop.children.iter().cloned());
            }
        }
        out.responses.push(resp);
    }
    Ok(out)
}

/// Refuses a document nested deeper than [`MAX_XML_DEPTH`], before the
/// (recursive) conversion into [`Element`]s. Iterative.
fn check_depth(doc: &roxmltree::Document<'_>) -> Result<(), DavError> {
    // Descendants come in document order, so a node's parent is always
    // seen before it: its depth is the parent's plus one.
    let mut depth: Vec<u8> = Vec::new();
    for n in doc.descendants() {
        let d = match n.parent() {
            Some(p) => depth.get(p.id().get_usize()).copied().unwrap_or(0) + 1,
            None => 0,
        };
        if usize::from(d) > MAX_XML_DEPTH {
            return Err(DavError::Protocol(format!(
                "the answer nests XML deeper than {MAX_XML_DEPTH} levels"
            )));
        }
        let i = n.id().get_usize();
        if depth.len() <= i {
            depth.resize(i + 1, 0);
        }
        depth[i] = d;
    }
    Ok(())
}

/// The code of a status line such as `HTTP/1.1 404 Not Found`.
fn status_code(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Decodes `%XX` escapes of a path (for comparing hrefs). A `%` not
/// followed by two hex digits stays as it is; bytes that do not form UTF-8
/// become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when two hrefs (paths or URLs, resolved against `base`) name the
/// same resource: compared by decoded path, ignoring a trailing slash.
pub fn same_resource(base: &Url, a: &str, b: &str) -> bool {
    let norm = |h: &str| {
        base.join(h)
            .map(|u| percent_decode(u.path()).trim_end_matches('/').to_string())
            .unwrap_or_else(|_| h.trim_end_matches('/').to_string())
    };
    norm(a) == norm(b)
}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RADICALE: &str = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/user/cal1/</href><propstat><prop><resourcetype><C:calendar /><collection /></resourcetype><displayname>Cal</displayname></prop><status>HTTP/1.1 200 OK</status></propstat><propstat><prop><C:calendar-timezone /></prop><status>HTTP/1.1 404 Not Found</status></propstat></response><response><href>/user/cal1/gone.ics</href><status>HTTP/1.1 404 Not Found</status></response><sync-token>http://radicale.org/ns/sync/abc</sync-token></multistatus>"#;

    #[test]
    fn a_multistatus_keeps_found_props_and_drops_404_propstats() {
        let ms = parse_multistatus(RADICALE).unwrap();
        assert_eq!(ms.responses.len(), 2);
        let cal = &ms.responses[0];
        assert_eq!(cal.href, "/user/cal1/");
        assert!(cal
            .prop(NS_DAV, "resourcetype")
            .unwrap()
            .child(NS_CALDAV, "calendar")
            .is_some());
        assert_eq!(cal.prop_text(NS_DAV, "displayname"), Some("Cal"));
        assert!(cal.prop(NS_CALDAV, "calendar-timezone").is_none());
        assert_eq!(ms.responses[1].status, Some(404));
        assert_eq!(
            ms.sync_token.as_deref(),
            Some("http://radicale.org/ns/sync/abc")
        );
    }

    #[test]
    fn prefixed_namespaces_and_cdata_are_read() {
        let xml = r#"<ns0:multistatus xmlns:ns0="DAV:" xmlns:ns1="urn:ietf:params:xml:ns:caldav"><ns0:response><ns0:href>/a.ics</ns0:href><ns0:propstat><ns0:status>HTTP/1.1 200 OK</ns0:status><ns0:prop><ns0:getetag>"1"</ns0:getetag><ns1:calendar-data><![CDATA[BEGIN:VCALENDAR
END:VCALENDAR]]></ns1:calendar-data></ns0:prop></ns0:propstat></ns0:response></ns0:multistatus>"#;
        let ms = parse_multistatus(xml).unwrap();
        let r = &ms.responses[0];
        assert_eq!(r.prop_text(NS_DAV, "getetag"), Some("\"1\""));
        assert!(r
            .prop_text(NS_CALDAV, "calendar-data")
            .unwrap()
            .starts_with("BEGIN:VCALENDAR"));
    }

    #[test]
    fn broken_xml_is_a_protocol_error() {
        assert!(matches!(
            parse_multistatus("<html>oops"),
            Err(DavError::Protocol(_))
        ));
        assert!(matches!(
            parse_multistatus("<html></html>"),
            Err(DavError::Protocol(_))
        ));
    }

    #[test]
    fn deeply_nested_xml_is_an_error_not_a_stack_overflow() {
        let depth = 8_000;
        let xml = format!(
            "<multistatus xmlns=\"DAV:\"><response><href>/a</href>{}{}</response></multistatus>",
            "<x>".repeat(depth),
            "</x>".repeat(depth)
        );
        let err = parse_multistatus(&xml).unwrap_err();
        assert!(
            matches!(err, DavError::Protocol(ref m) if m.contains("deeper")),
            "{err:?}"
        );
        // Just within the bound parses.
        let ok = format!(
            "<multistatus xmlns=\"DAV:\"><response><href>/a</href><propstat><prop>{}{}</prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>",
            "<x>".repeat(MAX_XML_DEPTH - 4),
            "</x>".repeat(MAX_XML_DEPTH - 4)
        );
        assert_eq!(parse_multistatus(&ok).unwrap().responses.len(), 1);
    }

    #[test]
    fn entity_definitions_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><multistatus xmlns="DAV:"><response><href>&lol3;</href></response></multistatus>"#;
        assert!(matches!(
            parse_multistatus(bomb),
            Err(DavError::Protocol(_))
        ));
    }

    #[test]
    fn percent_escapes_cut_off_or_inside_multibyte_characters_do_not_panic() {
        for s in [
            "%",
            "%4",
            "%é",
            "a%\u{e9}b",
            "%%41",
            "é%C3",
            "%C3%A9",
            "/x%2",
            "%41",
        ] {
            let _ = percent_decode(s);
        }
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%é"), "%é");
        assert_eq!(percent_decode("50%"), "50%");
    }

    #[test]
    fn hrefs_compare_by_decoded_path() {
        let base = Url::parse("https://p1.example.com/1/calendars/").unwrap();
        assert!(same_resource(
            &base,
            "/1/calendars/home/",
            "https://p1.example.com/1/calendars/home"
        ));
        assert!(same_resource(&base, "/1/a%20b.ics", "/1/a b.ics"));
        assert!(!same_resource(&base, "/1/a.ics", "/1/b.ics"));
    }
}
