//! API keys at runtime (scope `admin`): create one (its secret is answered once), list them,
//! revoke one.

use super::{Client, RunError};
use flowkit_wire::api::keys::{CreateKey, CreatedKey, KeyList, RevokedKey};
use reqwest::Method;

impl Client {
    /// Creates the key `name` with `scopes` (as `--api-key` spells them: `read`,
    /// `trigger=train/nightly`, ...) (`POST /keys`). The answer holds its secret: the server
    /// keeps only a digest and cannot show it again. A name in use is [`RunError::Api`] with
    /// the code `conflict`; a bad name or scope, `invalid_body` with each field at fault.
    pub async fn create_key(&self, name: &str, scopes: &[String]) -> Result<CreatedKey, RunError> {
        let url = self.route(&["keys"], &[]);
        let body = CreateKey {
            name: name.to_string(),
            scopes: scopes.to_vec(),
        };
        self.call(self.request(Method::POST, url).json(&body)?)
            .await
    }

    /// The keys: the server's startup keys, then the active stored ones (`GET /keys`). Never a
    /// secret.
    pub async fn keys(&self) -> Result<KeyList, RunError> {
        let url = self.route(&["keys"], &[]);
        self.call(self.request(Method::GET, url)).await
    }

    /// Revokes the stored key named `key` (or whose id it is) (`DELETE /keys/{key}`): every
    /// replica of the server refuses it within 5 s. A startup key cannot be revoked
    /// (`conflict`); an unknown one is `not_found`.
    pub async fn revoke_key(&self, key: &str) -> Result<RevokedKey, RunError> {
        let url = self.route(&["keys", key], &[]);
        // An empty JSON object: the server wants a JSON content type on every request that
        // changes something.
        let request = self
            .request(Method::DELETE, url)
            .json(&serde_json::Map::new())?;
        self.call(request).await
    }
}
