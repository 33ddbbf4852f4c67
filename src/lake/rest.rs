//! The Iceberg REST catalog transport of the commit path (`catalog.type: rest`): the
//! same operations as [`super::catalog::SqlCatalog`], as HTTP calls. A commit is
//! `POST /v1/{prefix}/namespaces/{ns}/tables/{t}` with the requirements and updates
//! lakectl built; the server checks the requirements and swaps the metadata, and a 409
//! is a [`CommitError::Conflict`], retried on fresh state like the SQL catalog's.

use std::collections::BTreeMap;

use iceberg::spec::TableMetadata;
use iceberg::{NamespaceIdent, TableIdent, TableRequirement, TableUpdate};
use reqwest::StatusCode;
use serde_json::json;

use super::auth::{self, Auth, Issued};
use super::{CommitError, LakeError};

pub struct RestClient {
    base: String,
    prefix: String,
    auth: Auth,
    headers: Vec<(String, String)>,
    /// The OAuth2 token in use (fetched on first use, refreshed before it expires).
    issued: tokio::sync::Mutex<Option<Issued>>,
    http: reqwest::Client,
    /// `/v1/config` lists `POST /v1/{prefix}/transactions/commit`: commits across tables
    /// in one transaction.
    pub transactions: bool,
}

/// The endpoint of multi-table commits, as `/v1/config`'s `endpoints` names it.
pub const TRANSACTIONS_ENDPOINT: &str = "POST /v1/{prefix}/transactions/commit";

fn err(e: impl std::fmt::Display) -> LakeError {
    LakeError::Unsupported(format!("REST catalog: {e}"))
}

/// A namespace in a URL path: levels joined by the unit separator (0x1F), encoded.
fn ns_path(ns: &NamespaceIdent) -> String {
    ns.iter().map(|l| encode(l)).collect::<Vec<_>>().join("%1F")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn message(r: reqwest::Response) -> String {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    format!("{status}: {msg}")
}

impl RestClient {
    /// Connects: `GET /v1/config`, which may set a path prefix. The catalog's
    /// `warehouse` (the server's name for it, as in PyIceberg) is the `warehouse`
    /// catalog property; without one the server's default is used.
    pub async fn connect(
        uri: &str,
        props: &BTreeMap<String, String>,
    ) -> Result<RestClient, LakeError> {
        let c = RestClient {
            base: uri.trim_end_matches('/').to_string(),
            prefix: String::new(),
            auth: Auth::from_props(uri, props).map_err(err)?,
            headers: auth::extra_headers(props),
            issued: Default::default(),
            http: reqwest::Client::new(),
            transactions: false,
        };
        let query: Vec<(&str, &str)> = props
            .get("warehouse")
            .map(|w| ("warehouse", w.as_str()))
            .into_iter()
            .collect();
        let url = format!("{}/v1/config", c.base);
        let r = c.send(reqwest::Method::GET, &url, &query, None).await?;
        let mut c = c;
        if !r.status().is_success() {
            return Err(err(format!("GET /v1/config: {}", message(r).await)));
        }
        let cfg: serde_json::Value = r.json().await.map_err(err)?;
        if let Some(p) = cfg["overrides"]["prefix"]
            .as_str()
            .or(cfg["defaults"]["prefix"].as_str())
        {
            c.prefix = p.trim_matches('/').to_string();
        }
        c.transactions = cfg["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x.as_str() == Some(TRANSACTIONS_ENDPOINT)));
        Ok(c)
    }

    /// The OAuth2 token to send: the one held, or a new one when there is none, it is
    /// due for refresh, or `fresh` (the server refused it).
    async fn token(&self, o: &auth::OAuth2, fresh: bool) -> Result<String, LakeError> {
        let mut held = self.issued.lock().await;
        let due = held
            .as_ref()
            .is_none_or(|i| i.refresh_at.is_some_and(|t| std::time::Instant::now() >= t));
        if fresh || due {
            *held = Some(auth::fetch_token(&self.http, o).await.map_err(err)?);
        }
        Ok(held.as_ref().expect("token").token.clone())
    }

    /// Sends one request with the catalog's headers and authentication: a bearer token
    /// (static or OAuth2), or an AWS SigV4 signature. An OAuth2 token the server
    /// refuses (401) is fetched again and the request sent once more.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, LakeError> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut fresh = false;
        loop {
            let mut b = self.http.request(method.clone(), url);
            if !query.is_empty() {
                b = b.query(query);
            }
            for (k, v) in &self.headers {
                b = b.header(k.as_str(), v.as_str());
            }
            if let Some(body) = &body {
                b = b
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            match &self.auth {
                Auth::Token(t) => b = b.bearer_auth(t),
                Auth::OAuth2(o) => b = b.bearer_auth(self.token(o, fresh).await?),
                Auth::SigV4(_) | Auth::None => {}
            }
            let mut req = b.build().map_err(err)?;
            if let Auth::SigV4(s) = &self.auth {
                s.sign(&mut req, chrono::Utc::now());
            }
            let r = self.http.execute(req).await.map_err(err)?;
            if r.status() == StatusCode::UNAUTHORIZED
                && !fresh
                && matches!(self.auth, Auth::OAuth2(_))
            {
                fresh = true;
                continue;
            }
            return Ok(r);
        }
    }

    fn url(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            format!("{}/v1/{path}", self.base)
        } else {
            format!("{}/v1/{}/{path}", self.base, self.prefix)
        }
    }

    pub async fn namespace_exists(&self, ns: &NamespaceIdent) -> Result<bool, LakeError> {
        let r = self
            .send(
                reqwest::Method::GET,
                &self.url(&format!("namespaces/{}", ns_path(ns))),
                &[],
                None,
            )
            .await?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(err(message(r).await)),
        }
    }

    pub async fn create_namespace(&self, ns: &NamespaceIdent) -> Result<(), LakeError> {
        let body = json!({"namespace": ns.clone().inner(), "properties": {}});
        let r = self
            .send(
                reqwest::Method::POST,
                &self.url("namespaces"),
                &[],
                Some(&body),
            )
            .await?;
        match r.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Ok(()),
            _ => Err(err(message(r).await)),
        }
    }

    /// `GET {path}` as JSON; any status but 2xx is an error with the server's message.
    async fn get_json(&self, path: &str) -> Result<serde_json::Value, LakeError> {
        let r = self
            .send(reqwest::Method::GET, &self.url(path), &[], None)
            .await?;
        if !r.status().is_success() {
            return Err(err(message(r).await));
        }
        r.json().await.map_err(err)
    }

    pub async fn list_namespaces(&self) -> Result<Vec<NamespaceIdent>, LakeError> {
        let v = self.get_json("namespaces").await?;
        Ok(v["namespaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| serde_json::from_value::<Vec<String>>(n.clone()).ok())
                    .filter_map(|n| NamespaceIdent::from_vec(n).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn list_tables(&self) -> Result<Vec<TableIdent>, LakeError> {
        let mut out = Vec::new();
        for ns in self.list_namespaces().await? {
            let v = self
                .get_json(&format!("namespaces/{}/tables", ns_path(&ns)))
                .await?;
            for t in v["identifiers"].as_array().cloned().unwrap_or_default() {
                if let Some(name) = t["name"].as_str() {
                    out.push(TableIdent::new(ns.clone(), name.to_string()));
                }
            }
        }
        Ok(out)
    }

    fn table_url(&self, ident: &TableIdent) -> String {
        self.url(&format!(
            "namespaces/{}/tables/{}",
            ns_path(ident.namespace()),
            encode(ident.name())
        ))
    }

    fn parse(v: serde_json::Value) -> Result<(String, TableMetadata), LakeError> {
        let location = v["metadata-location"]
            .as_str()
            .ok_or_else(|| err("response without metadata-location"))?
            .to_string();
        let md: TableMetadata = serde_json::from_value(v["metadata"].clone()).map_err(err)?;
        Ok((location, md))
    }

    pub async fn load_table(
        &self,
        ident: &TableIdent,
    ) -> Result<Option<(String, TableMetadata)>, LakeError> {
        let r = self
            .send(reqwest::Method::GET, &self.table_url(ident), &[], None)
            .await?;
        match r.status() {
            s if s.is_success() => Ok(Some(Self::parse(r.json().await.map_err(err)?)?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(err(message(r).await)),
        }
    }

    /// Creates the table from `metadata`'s schema, spec, sort order and properties, at
    /// `location` or where the server puts it (it assigns ids and writes the first
    /// metadata file).
    pub async fn create_table(
        &self,
        ident: &TableIdent,
        metadata: &TableMetadata,
        location: Option<&str>,
    ) -> Result<(String, TableMetadata), CommitError> {
        let body = json!({
            "name": ident.name(),
            "location": location,
            "schema": metadata.current_schema(),
            "partition-spec": metadata.default_partition_spec().as_ref().clone().into_unbound(),
            "write-order": metadata.default_sort_order(),
            "properties": metadata.properties(),
            "stage-create": false,
        });
        let r = self
            .send(
                reqwest::Method::POST,
                &self.url(&format!("namespaces/{}/tables", ns_path(ident.namespace()))),
                &[],
                Some(&body),
            )
            .await
            .map_err(CommitError::Failed)?;
        match r.status() {
            s if s.is_success() => Ok(Self::parse(r.json().await.map_err(err)?)?),
            StatusCode::CONFLICT => Err(CommitError::Conflict(message(r).await)),
            _ => Err(CommitError::Failed(err(message(r).await))),
        }
    }

    /// Commits to several tables in one transaction (`POST /transactions/commit`): all
    /// land or none; a failed requirement of any is a `Conflict`.
    pub async fn commit_transaction(
        &self,
        commits: &[(TableIdent, Vec<TableRequirement>, Vec<TableUpdate>)],
    ) -> Result<(), CommitError> {
        let changes: Vec<serde_json::Value> = commits
            .iter()
            .map(|(ident, requirements, updates)| {
                json!({
                    "identifier": {"namespace": ident.namespace().clone().inner(), "name": ident.name()},
                    "requirements": requirements,
                    "updates": updates,
                })
            })
            .collect();
        let body = json!({ "table-changes": changes });
        let r = self
            .send(
                reqwest::Method::POST,
                &self.url("transactions/commit"),
                &[],
                Some(&body),
            )
            .await
            .map_err(CommitError::Failed)?;
        match r.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Err(CommitError::Conflict(message(r).await)),
            _ => Err(CommitError::Failed(err(message(r).await))),
        }
    }

    pub async fn commit(
        &self,
        ident: &TableIdent,
        requirements: &[TableRequirement],
        updates: &[TableUpdate],
    ) -> Result<(String, TableMetadata), CommitError> {
        let body = json!({
            "identifier": {"namespace": ident.namespace().clone().inner(), "name": ident.name()},
            "requirements": requirements,
            "updates": updates,
        });
        let r = self
            .send(
                reqwest::Method::POST,
                &self.table_url(ident),
                &[],
                Some(&body),
            )
            .await
            .map_err(CommitError::Failed)?;
        match r.status() {
            s if s.is_success() => Ok(Self::parse(r.json().await.map_err(err)?)?),
            StatusCode::CONFLICT => Err(CommitError::Conflict(message(r).await)),
            StatusCode::NOT_FOUND => Err(CommitError::Failed(LakeError::NoSuchTable(
                ident.to_string(),
            ))),
            _ => Err(CommitError::Failed(err(message(r).await))),
        }
    }
}
