//! How the REST catalog client authenticates, from the catalog properties as PyIceberg,
//! Spark and terraform-provider-iceberg name them:
//! - `token`: a static bearer token;
//! - `credential: "id:secret"` (OAuth2 client credentials) with `oauth2-server-uri`
//!   (default `<uri>/v1/oauth/tokens`) and `scope` (default `catalog`): a token is
//!   fetched, refreshed before it expires, and fetched again once on a 401;
//! - `rest.sigv4-enabled: "true"` with `rest.signing-region`, `rest.signing-name`
//!   (`glue`, `s3tables`, default `execute-api`): every request is signed with AWS
//!   Signature V4, keys from `rest.access-key-id` / `client.access-key-id` (and the
//!   secret and session token beside them) or `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! - `header.NAME: value`: sent on every request (Polaris realms, Unity).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use sha2_11::{Digest, Sha256};

/// Refresh a token this long before it expires (or at half its life, if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SigV4 {
    pub region: String,
    pub service: String,
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OAuth2 {
    pub server_uri: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Token(String),
    OAuth2(OAuth2),
    SigV4(SigV4),
}

/// A token and when to fetch the next one.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub refresh_at: Option<Instant>,
}

fn prop<'a>(props: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| props.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl Auth {
    /// The authentication the catalog properties ask for (`uri`: the catalog's base).
    pub fn from_props(uri: &str, props: &BTreeMap<String, String>) -> Result<Auth, String> {
        let sigv4 = prop(props, &["rest.sigv4-enabled"]).is_some_and(|v| v == "true");
        if sigv4 {
            let access_key = prop(props, &["rest.access-key-id", "client.access-key-id"])
                .map(str::to_string)
                .or_else(|| env("AWS_ACCESS_KEY_ID"))
                .ok_or("rest.sigv4-enabled needs keys: rest.access-key-id (or client.access-key-id, or AWS_ACCESS_KEY_ID)")?;
            let secret_key =
                prop(props, &["rest.secret-access-key", "client.secret-access-key"])
                    .map(str::to_string)
                    .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
                    .ok_or("rest.sigv4-enabled needs rest.secret-access-key (or client.secret-access-key, or AWS_SECRET_ACCESS_KEY)")?;
            return Ok(Auth::SigV4(SigV4 {
                region: prop(props, &["rest.signing-region", "client.region"])
                    .map(str::to_string)
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into()),
                service: prop(props, &["rest.signing-name"])
                    .unwrap_or("execute-api")
                    .to_string(),
                access_key,
                secret_key,
                session_token: prop(props, &["rest.session-token", "client.session-token"])
                    .map(str::to_string)
                    .or_else(|| env("AWS_SESSION_TOKEN")),
            }));
        }
        if let Some(cred) = prop(props, &["credential"]) {
            let (id, secret) = match cred.split_once(':') {
                Some((id, secret)) => (id.to_string(), secret.to_string()),
                None => (String::new(), cred.to_string()),
            };
            return Ok(Auth::OAuth2(OAuth2 {
                server_uri: prop(props, &["oauth2-server-uri"])
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}/v1/oauth/tokens", uri.trim_end_matches('/'))),
                client_id: id,
                client_secret: secret,
                scope: prop(props, &["scope"]).unwrap_or("catalog").to_string(),
            }));
        }
        Ok(match prop(props, &["token"]) {
            Some(t) => Auth::Token(t.to_string()),
            None => Auth::None,
        })
    }
}

/// `header.*` properties: headers for every request.
pub fn extra_headers(props: &BTreeMap<String, String>) -> Vec<(String, String)> {
    props
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("header.")
                .map(|h| (h.to_string(), v.clone()))
        })
        .collect()
}

/// Fetches a token with the client-credentials grant.
pub async fn fetch_token(http: &reqwest::Client, o: &OAuth2) -> Result<Issued, String> {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_secret", o.client_secret.as_str()),
        ("scope", o.scope.as_str()),
    ];
    if !o.client_id.is_empty() {
        form.push(("client_id", o.client_id.as_str()));
    }
    let r = http
        .post(&o.server_uri)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("OAuth2 token request to {}: {e}", o.server_uri))?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    if !status.is_success() {
        let why = body["error_description"]
            .as_str()
            .or(body["error"].as_str())
            .unwrap_or("");
        return Err(format!(
            "OAuth2 token request to {} refused ({status}) for client `{}`: {why}",
            o.server_uri, o.client_id
        ));
    }
    let token = body["access_token"]
        .as_str()
        .ok_or_else(|| format!("OAuth2 response from {} has no access_token", o.server_uri))?
        .to_string();
    let refresh_at = body["expires_in"].as_u64().map(|secs| {
        let life = Duration::from_secs(secs);
        let margin = REFRESH_MARGIN.min(life / 2);
        Instant::now() + life - margin
    });
    Ok(Issued { token, refresh_at })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding of everything but unreserved characters (and `/` when `path`).
fn uri_encode(s: &str, path: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b'/' if path => "/".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl SigV4 {
    /// Signs `req` (its body in memory) at `now`: adds `x-amz-date`,
    /// `x-amz-content-sha256`, the session token and `Authorization`. The canonical
    /// path is the sent (encoded) path encoded again, as botocore does for every service
    /// but S3.
    pub fn sign(&self, req: &mut reqwest::Request, now: chrono::DateTime<chrono::Utc>) {
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = now.format("%Y%m%d").to_string();
        let body: &[u8] = req.body().and_then(|b| b.as_bytes()).unwrap_or_default();
        let payload = sha256_hex(body);
        let url = req.url().clone();
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let path = if url.path().is_empty() {
            "/"
        } else {
            url.path()
        };
        let canonical_path = if self.service == "s3" {
            path.to_string()
        } else {
            uri_encode(path, true)
        };
        let mut query: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-amz-content-sha256".into(), payload.clone()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        if let Some(t) = &self.session_token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        headers.sort();
        let canonical_headers: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let signed = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical = format!(
            "{}\n{canonical_path}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload}",
            req.method().as_str()
        );
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let k = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, self.service.as_bytes());
        let k = hmac(&k, b"aws4_request");
        let signature = hex(&hmac(&k, to_sign.as_bytes()));
        let h = req.headers_mut();
        let set = |h: &mut reqwest::header::HeaderMap, k: &'static str, v: &str| {
            if let Ok(v) = reqwest::header::HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        };
        set(h, "x-amz-date", &amz_date);
        set(h, "x-amz-content-sha256", &payload);
        if let Some(t) = &self.session_token {
            set(h, "x-amz-security-token", t);
        }
        set(
            h,
            "authorization",
            &format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                self.access_key
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 example (IAM ListUsers, "Signature Version 4 signing
    /// process" in the AWS General Reference): the signing key and signature.
    #[test]
    fn sigv4_matches_the_aws_example() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let k = hmac(format!("AWS4{secret}").as_bytes(), b"20150830");
        let k = hmac(&k, b"us-east-1");
        let k = hmac(&k, b"iam");
        let k = hmac(&k, b"aws4_request");
        assert_eq!(
            hex(&k),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        let to_sign = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\nf536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59";
        assert_eq!(
            hex(&hmac(&k, to_sign.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn props_pick_the_auth() {
        let p = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        match Auth::from_props("http://h/catalog/", &p(&[("credential", "a:b")])).unwrap() {
            Auth::OAuth2(o) => {
                assert_eq!(o.server_uri, "http://h/catalog/v1/oauth/tokens");
                assert_eq!((o.client_id.as_str(), o.client_secret.as_str()), ("a", "b"));
                assert_eq!(o.scope, "catalog");
            }
            other => panic!("{other:?}"),
        }
        match Auth::from_props(
            "http://h",
            &p(&[
                ("rest.sigv4-enabled", "true"),
                ("rest.signing-name", "s3tables"),
                ("client.access-key-id", "K"),
                ("client.secret-access-key", "S"),
            ]),
        )
        .unwrap()
        {
            Auth::SigV4(s) => assert_eq!(
                (s.service.as_str(), s.access_key.as_str()),
                ("s3tables", "K")
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            extra_headers(&p(&[("header.Polaris-Realm", "r1"), ("token", "t")])),
            vec![("Polaris-Realm".to_string(), "r1".to_string())]
        );
    }
}
