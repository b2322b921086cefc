//! Bearer-token authentication (`serve --auth-token`, `--auth-tokens FILE`):
//! [`TokenAuth`] knows the tokens and which methods need one; its layer refuses
//! calls without `authorization: Bearer <known token>` with UNAUTHENTICATED
//! before any responder runs, and the gRPC adapter asks the same object about
//! health and reflection (open unless `--auth-all`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::{Either, Ready};
use tower_layer::Layer;
use tower_service::Service;

use crate::Error;
use crate::call::{Answer, CallRequest};

/// What a refused call is told: the same for a missing and an unknown token.
pub const UNAUTHENTICATED_MESSAGE: &str = "Missing or invalid token";

/// Largest tokens file read (a list of tokens, not a database).
const MAX_TOKENS_FILE: u64 = 1024 * 1024;

/// How often a tokens file is re-read for changes.
const TOKENS_FILE_POLL: Duration = Duration::from_secs(1);

/// Which tokens are accepted and where. Shared (`Arc`) by the layer, the gRPC
/// adapter and the task re-reading a tokens file.
pub struct TokenAuth {
    /// The accepted tokens: swapped whole when the tokens file changes.
    tokens: ArcSwap<HashSet<Box<[u8]>>>,
    /// Tokens given directly (`--auth-token`): kept across file reloads.
    fixed: Vec<String>,
    file: Option<PathBuf>,
    /// The tokens file as first read: [`TokenAuth::watch_file`] starts from it,
    /// so an edit made between startup and serving is not missed.
    file_bytes: Vec<u8>,
    /// Only methods matching these need a token; all do when `None`.
    scope: Option<Scope>,
    all: bool,
}

// Not derived: tokens are secrets and stay out of logs.
impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("tokens", &self.token_count())
            .field("file", &self.file)
            .field("scoped", &self.scope.is_some())
            .field("all", &self.all)
            .finish()
    }
}

/// `--auth-scope` patterns: a glob without `/` matches a service's full name
/// (`users.UserService`, `users.*`), one with `/` a method (`*/Delete*`).
#[derive(Debug)]
struct Scope {
    services: globset::GlobSet,
    methods: globset::GlobSet,
}

impl TokenAuth {
    /// Accepts these tokens (repeat [`TokenAuth::from_file`] for a file of them).
    pub fn new<I, T>(tokens: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let fixed: Vec<String> = tokens.into_iter().map(Into::into).collect();
        let set = fixed.iter().map(|t| t.as_bytes().into()).collect();
        Self { tokens: ArcSwap::from_pointee(set), fixed, file: None, file_bytes: Vec::new(), scope: None, all: false }
    }

    /// Also accepts the tokens in `path` (one per line; blank lines and lines
    /// starting with `#` are skipped). [`TokenAuth::watch_file`] re-reads it.
    pub fn from_file(mut self, path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        let bytes = read_limited(&path)?;
        let file_tokens = parse_tokens(&bytes);
        if file_tokens.is_empty() {
            tracing::warn!(file = %path.display(), "the tokens file lists no token");
        }
        self.file = Some(path);
        self.file_bytes = bytes;
        self.publish(file_tokens);
        Ok(self)
    }

    /// Only methods matching one of `patterns` need a token (default: every
    /// method). A pattern without `/` matches a service's full name
    /// (`users.UserService`, `admin.*`), one with `/` matches `Service/Method`
    /// (`users.UserService/Delete*`, `*/Delete*`).
    pub fn scope<I, T>(mut self, patterns: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let (mut services, mut methods) = (globset::GlobSetBuilder::new(), globset::GlobSetBuilder::new());
        let mut any = false;
        for p in patterns {
            let p = p.as_ref().trim().trim_start_matches('/');
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::invalid_argument(format!("--auth-scope '{p}': {e}")))?;
            if p.contains('/') {
                methods.add(glob)
            } else {
                services.add(glob)
            };
            any = true;
        }
        if any {
            let build = |b: globset::GlobSetBuilder| {
                b.build().map_err(|e| Error::invalid_argument(format!("--auth-scope: {e}")))
            };
            self.scope = Some(Scope { services: build(services)?, methods: build(methods)? });
        }
        Ok(self)
    }

    /// Also requires a token for health and reflection (open by default, so
    /// load balancers and tools can probe).
    pub fn all(mut self, yes: bool) -> Self {
        self.all = yes;
        self
    }

    /// Whether the built-in services (health, reflection) need a token.
    pub(crate) fn covers_builtin(&self) -> bool {
        self.all
    }

    /// How many tokens are accepted now.
    pub fn token_count(&self) -> usize {
        self.tokens.load().len()
    }

    /// Whether a call to `path` (`/pkg.Service/Method`) needs a token.
    fn required(&self, path: &str) -> bool {
        let Some(scope) = &self.scope else { return true };
        let method = path.trim_start_matches('/');
        let service = method.split_once('/').map_or(method, |(s, _)| s);
        scope.services.is_match(service) || scope.methods.is_match(method)
    }

    /// Checks a call to `path` carrying this `authorization` value.
    pub(crate) fn check(&self, path: &str, authorization: Option<&[u8]>) -> Result<(), Error> {
        if !self.required(path) {
            return Ok(());
        }
        self.check_token(authorization)
    }

    /// Checks an `authorization` value, whatever the scope (what `--auth-all`
    /// covers: health, reflection, unknown methods).
    pub(crate) fn check_token(&self, authorization: Option<&[u8]>) -> Result<(), Error> {
        let token = authorization.and_then(bearer);
        match token {
            Some(t) if self.tokens.load().contains(t) => Ok(()),
            _ => Err(Error::unauthenticated(UNAUTHENTICATED_MESSAGE)),
        }
    }

    fn publish(&self, file_tokens: Vec<String>) {
        let set =
            self.fixed.iter().chain(file_tokens.iter()).map(|t| t.as_bytes().into()).collect::<HashSet<Box<[u8]>>>();
        self.tokens.store(Arc::new(set));
    }

    /// Re-reads the tokens file whenever it changes, until dropped (a file that
    /// cannot be read is logged and the tokens already known are kept; a file
    /// read successfully replaces them, even with none). Ends at once without a file.
    pub async fn watch_file(self: Arc<Self>) {
        let Some(path) = self.file.clone() else { return };
        let mut last = Some(self.file_bytes.clone());
        let mut tick = tokio::time::interval(TOKENS_FILE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let p = path.clone();
            let now = tokio::task::spawn_blocking(move || read_limited(&p)).await;
            let bytes = match now {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    if last.is_some() {
                        tracing::warn!(error = %e, "cannot re-read the tokens file; keeping the tokens already known");
                    }
                    last = None;
                    continue;
                }
                Err(_) => continue,
            };
            if last.as_deref() == Some(&bytes[..]) {
                continue;
            }
            let tokens = parse_tokens(&bytes);
            tracing::info!(file = %path.display(), tokens = tokens.len(), "auth tokens reloaded");
            if tokens.is_empty() && self.fixed.is_empty() {
                tracing::warn!("the tokens file lists no token: every call that needs one is refused");
            }
            self.publish(tokens);
            last = Some(bytes);
        }
    }

    /// The layer refusing calls without a known token.
    pub fn layer(self: &Arc<Self>) -> AuthLayer {
        AuthLayer(self.clone())
    }
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn read_limited(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read as _;
    let what = || format!("cannot read the tokens file '{}'", path.display());
    let file = std::fs::File::open(path).map_err(|e| Error::io(what(), e))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKENS_FILE + 1).read_to_end(&mut bytes).map_err(|e| Error::io(what(), e))?;
    if bytes.len() as u64 > MAX_TOKENS_FILE {
        return Err(Error::invalid_argument(format!(
            "the tokens file '{}' is larger than {MAX_TOKENS_FILE} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// One token per line; surrounding whitespace, blank lines and `#` comments skipped.
/// Lines that are not UTF-8 are skipped (a token travels in an HTTP header).
pub(crate) fn parse_tokens(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The layer [`TokenAuth::layer`] makes.
#[derive(Debug, Clone)]
pub struct AuthLayer(Arc<TokenAuth>);

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { auth: self.0.clone(), inner }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    auth: Arc<TokenAuth>,
    inner: S,
}

impl<S> Service<CallRequest> for Auth<S>
where
    S: Service<CallRequest, Response = Answer, Error = Error>,
{
    type Response = Answer;
    type Error = Error;
    type Future = Either<S::Future, Ready<Result<Answer, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: CallRequest) -> Self::Future {
        let value = call.metadata().get("authorization").map(|v| v.as_bytes());
        match self.auth.check(call.path(), value) {
            Ok(()) => Either::Left(self.inner.call(call)),
            Err(e) => Either::Right(futures_util::future::ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        for bad in [&b""[..], b"Bearer", b"Bearer ", b"Basic abc", b"Bearerabc", b"abc"] {
            assert_eq!(bearer(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tokens_file_lines() {
        assert_eq!(parse_tokens(b"a\n\n  b  \r\n# c\n\xff\xfe\nd"), vec!["a", "b", "d"]);
    }

    #[test]
    fn random_bytes_never_panic_and_unknown_tokens_are_refused() {
        let auth = TokenAuth::new(["s3cret"]).scope(["users.*", "*/Delete*"]).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let len = rng.usize(0..40);
            let mut v: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if rng.bool() {
                v.splice(0..0, b"Bearer ".iter().copied());
            }
            let _ = parse_tokens(&v);
            assert!(auth.check("/users.UserService/GetUser", Some(&v)).is_err() || v.ends_with(b"s3cret"));
        }
    }

    #[test]
    fn scopes_pick_services_and_methods() {
        let auth = TokenAuth::new(["t"]).scope(["users.UserService", "*/Delete*"]).unwrap();
        assert!(auth.required("/users.UserService/GetUser"));
        assert!(auth.required("/other.Admin/DeleteAll"));
        assert!(!auth.required("/other.Admin/GetAll"));
        assert!(!auth.required("/users.UserServiceV2/GetUser"));
        assert!(auth.check("/other.Admin/GetAll", None).is_ok());
        let e = auth.check("/users.UserService/GetUser", Some(b"Bearer x")).unwrap_err();
        assert_eq!((e.code(), e.to_string().contains(UNAUTHENTICATED_MESSAGE)), (tonic::Code::Unauthenticated, true));
        assert!(auth.check("/users.UserService/GetUser", Some(b"Bearer t")).is_ok());
        assert!(TokenAuth::new(["t"]).scope(["a[b"]).is_err());
    }
}
