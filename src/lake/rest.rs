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

use super::{CommitError, LakeError};

pub struct RestClient {
    base: String,
    prefix: String,
    token: Option<String>,
    http: reqwest::Client,
}

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
        let mut c = RestClient {
            base: uri.trim_end_matches('/').to_string(),
            prefix: String::new(),
            token: props.get("token").cloned(),
            http: reqwest::Client::new(),
        };
        let mut req = c.request(reqwest::Method::GET, &format!("{}/v1/config", c.base));
        if let Some(w) = props.get("warehouse") {
            req = req.query(&[("warehouse", w)]);
        }
        let r = req.send().await.map_err(err)?;
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
        Ok(c)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
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
            .request(
                reqwest::Method::GET,
                &self.url(&format!("namespaces/{}", ns_path(ns))),
            )
            .send()
            .await
            .map_err(err)?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(err(message(r).await)),
        }
    }

    pub async fn create_namespace(&self, ns: &NamespaceIdent) -> Result<(), LakeError> {
        let r = self
            .request(reqwest::Method::POST, &self.url("namespaces"))
            .json(&json!({"namespace": ns.clone().inner(), "properties": {}}))
            .send()
            .await
            .map_err(err)?;
        match r.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Ok(()),
            _ => Err(err(message(r).await)),
        }
    }

    /// `GET {path}` as JSON; any status but 2xx is an error with the server's message.
    async fn get_json(&self, path: &str) -> Result<serde_json::Value, LakeError> {
        let r = self
            .request(reqwest::Method::GET, &self.url(path))
            .send()
            .await
            .map_err(err)?;
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
            .request(reqwest::Method::GET, &self.table_url(ident))
            .send()
            .await
            .map_err(err)?;
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
            .request(
                reqwest::Method::POST,
                &self.url(&format!("namespaces/{}/tables", ns_path(ident.namespace()))),
            )
            .json(&body)
            .send()
            .await
            .map_err(err)?;
        match r.status() {
            s if s.is_success() => Ok(Self::parse(r.json().await.map_err(err)?)?),
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
            .request(reqwest::Method::POST, &self.table_url(ident))
            .json(&body)
            .send()
            .await
            .map_err(err)?;
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
