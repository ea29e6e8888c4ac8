//! Entering the portal and staying in: the magic link, the session cookie, the CSRF token, signing out.

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use courier_core::Scope;
use courier_store::Owner;
use courier_store::portal_sessions::{self, Session};
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::page::{Nav, PortalError, Section, layout, refreshing, render};
use crate::state::AppState;

/// The session cookie; scoped to `/portal`, so the JSON API never sees it.
pub const COOKIE: &str = "courier_portal";
/// The hidden form field every state-changing form carries.
pub const CSRF_FIELD: &str = "csrf";

/// A signed-in portal user: the session, and the CSRF token of its forms.
#[derive(Debug, Clone)]
pub struct Viewer {
    session: Session,
    csrf: String,
}

/// The CSRF token of a session: derived from the cookie's secret token, so only a page served to the cookie's
/// holder can carry it, and nothing more is stored.
fn csrf_of(cookie_token: &str) -> String {
    let digest = Sha256::new().chain_update(b"courier portal csrf\0").chain_update(cookie_token.as_bytes()).finalize();
    URL_SAFE_NO_PAD.encode(digest)
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl Viewer {
    pub fn owner(&self) -> Owner {
        self.session.owner
    }

    pub fn can(&self, scope: Scope) -> bool {
        self.session.scopes.contains(scope)
    }

    /// The owner to act for, when the session has `scope`.
    pub fn require(&self, scope: Scope) -> Result<Owner, PortalError> {
        if self.can(scope) { Ok(self.session.owner) } else { Err(PortalError::Forbidden(scope)) }
    }

    /// The hidden field for a form of this session.
    /// The header's navigation for this viewer on a page of `section`.
    pub fn nav(&self, section: Section) -> Nav {
        Nav {
            section,
            environment: self.owner().environment,
            can_replay: self.can(Scope::DeliveriesReplay),
            csrf_field: self.csrf_field(),
        }
    }

    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.csrf); }
    }

    /// Refuses a form that does not carry this session's token.
    fn check_csrf(&self, presented: Option<&str>) -> Result<(), PortalError> {
        match presented {
            Some(token) if bool::from(token.as_bytes().ct_eq(self.csrf.as_bytes())) => Ok(()),
            _ => Err(PortalError::Csrf),
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = PortalError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PortalError> {
        let token = cookie_token(&parts.headers).ok_or(PortalError::SignedOut)?;
        let session = portal_sessions::find(&state.pool, token).await?.ok_or(PortalError::SignedOut)?;
        Ok(Viewer { session, csrf: csrf_of(token) })
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginParams {
    token: Option<String>,
}

/// The magic link's landing page: a form that signs in when the person who opened the link asks to.
///
/// Opening the link changes nothing (a link previewer, a prefetch or a crawler spends no token), and the token
/// travels on in a POST body, never through a redirect chain's addresses and the access logs along it.
pub async fn landing(Query(params): Query<LoginParams>) -> Result<Response, PortalError> {
    let token = params.token.ok_or(PortalError::SignedOut)?;
    Ok(render(layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in to the portal" }
            p { "This link opens your webhook portal. It works once." }
            form method="post" action="/portal/login" {
                input type="hidden" name="token" value=(token);
                button type="submit" { "Continue to the portal" }
            }
        },
    )))
}

/// Whether a sign-in form was submitted from one of our own pages. Browsers say where a request comes from
/// (`Sec-Fetch-Site`, else `Origin`); a page elsewhere posting a link of its own would sign the visitor into
/// someone else's portal (login CSRF), so a cross-site submission is refused. A client that sends neither header
/// is not a browser, and cannot be driven by another site.
fn from_our_pages(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = value("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match (value("origin"), value("host")) {
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: Option<String>,
}

/// Signing in: spends the token, sets the cookie, and sends the browser on to `/portal`.
///
/// The answer is a page that moves on by itself (`meta refresh`) rather than a 303, so the cookie is set by a
/// same-site page and the next navigation carries it (`SameSite=Strict`).
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PortalError> {
    if !from_our_pages(&headers) {
        return Err(PortalError::Csrf);
    }
    let token = form.token.ok_or(PortalError::SignedOut)?;
    let entered = portal_sessions::redeem(&state.pool, &token).await?.ok_or(PortalError::SignedOut)?;
    let max_age = (entered.session.expires_at - chrono::Utc::now()).num_seconds().max(0);
    let secure = if state.config.portal.secure_cookie { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path=/portal; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        entered.cookie_token
    );
    let page = refreshing(
        "Signing in",
        None,
        0,
        "/portal",
        html! {
            h1 { "Signing in…" }
            p { a href="/portal" { "Continue to the portal" } }
        },
    );
    let mut res = render(page);
    let cookie = HeaderValue::from_str(&cookie).map_err(|e| PortalError::Internal(crate::ApiError::internal(e)))?;
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

/// A form with nothing but the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// A form that carries the session's CSRF token.
pub trait CarriesCsrf {
    fn csrf(&self) -> Option<&str>;
}

impl CarriesCsrf for CsrfForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// A state-changing form from a signed-in viewer, its CSRF token already checked: a handler that takes one cannot
/// forget the check, and nothing runs for a form that fails it.
pub struct Submitted<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T> FromRequest<AppState> for Submitted<T>
where
    T: DeserializeOwned + CarriesCsrf + Send,
{
    type Rejection = PortalError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PortalError> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| PortalError::BadInput(rejection.body_text()))?;
        viewer.check_csrf(form.csrf())?;
        Ok(Self { viewer, form })
    }
}

/// Ends the session and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    Submitted { viewer, .. }: Submitted<CsrfForm>,
) -> Result<Response, PortalError> {
    portal_sessions::revoke(&state.pool, viewer.owner(), &viewer.session.id).await?;
    let page = layout(
        "Signed out",
        None,
        html! {
            h1 { "Signed out" }
            p { "You left the portal. Open it again from your dashboard to get a new link." }
        },
    );
    let clear = format!("{COOKIE}=; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, clear)], render(page)).into_response())
}
