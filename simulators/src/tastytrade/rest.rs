//! The REST API: OAuth token refresh, session validation, accounts, positions, quote
//! tokens, the WebSocket upgrades, and the `/sim/` controls (faults, positions).

#[allow(unused_imports)]
use super::*;

pub(super) type St = State<Arc<SimState>>;

pub(super) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/oauth/token", post(oauth_token))
        .route("/sessions/validate", post(validate))
        .route("/customers/me/accounts", get(accounts))
        .route("/accounts/{account}/positions", get(positions))
        .route("/api-quote-tokens", get(quote_token))
        .route("/dxlink", get(dxlink_upgrade))
        .route("/streamer", get(streamer_upgrade))
        .route("/sim/fault/{name}", post(kit::fault::<SimState>))
        .route("/sim/position/{account}", post(position_change))
        .with_state(state)
}

pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The API refuses requests without a User-Agent, and without a live access token.
pub(super) fn refuse(s: &SimState, headers: &HeaderMap) -> Option<Response> {
    if !headers.contains_key("user-agent") {
        s.stats.rest_unauthorized.fetch_add(1, Relaxed);
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "missing_user_agent",
            "a User-Agent header is required",
        ));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
    match token {
        Some(t) if SimState::valid(&s.access_tokens, t) => None,
        _ => {
            s.stats.rest_unauthorized.fetch_add(1, Relaxed);
            Some(error(
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "This access token is invalid or expired",
            ))
        }
    }
}

pub(super) async fn oauth_token(
    State(s): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !headers.contains_key("user-agent") {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_user_agent",
            "a User-Agent header is required",
        );
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let grant = body.get("grant_type").and_then(Value::as_str);
    let refresh = body.get("refresh_token").and_then(Value::as_str);
    if grant != Some("refresh_token") || refresh.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type refresh_token and refresh_token are required",
        );
    }
    let wrong = s
        .cfg
        .refresh_token
        .as_deref()
        .is_some_and(|want| Some(want) != refresh);
    if wrong || s.reject_auth.load(Relaxed) {
        return error(StatusCode::UNAUTHORIZED, "invalid_grant", "Grant revoked");
    }
    let ttl = s.cfg.access_token_ttl;
    let token = s.issue(&s.access_tokens, "sim-access", ttl);
    s.stats.access_tokens_issued.fetch_add(1, Relaxed);
    Json(
        json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs().max(1),
        "id_token": "sim"}),
    )
    .into_response()
}

pub(super) async fn validate(State(s): St, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    Json(
        json!({"data": {"email": "sim@example.com", "username": "sim", "external-id": "U0001",
        "id": 1}, "context": "/sessions/validate"}),
    )
    .into_response()
}

pub(super) async fn accounts(State(s): St, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    let items: Vec<Value> = s
        .cfg
        .accounts
        .iter()
        .map(|a| {
            json!({"account": {"account-number": a, "opened-at": "2024-01-02T15:00:00.000+00:00",
                "nickname": "sim", "account-type-name": "Individual", "is-closed": false,
                "day-trader-status": false, "is-firm-error": false, "is-firm-proprietary": false,
                "is-futures-approved": true, "margin-or-cash": "Margin", "is-foreign": false,
                "created-at": "2024-01-02T15:00:00.000+00:00", "external-id": format!("A{a}"),
                "investment-objective": "SPECULATION", "suitable-options-level": "No Restrictions"},
                "authority-level": "owner"})
        })
        .collect();
    Json(json!({"data": {"items": items}, "context": "/customers/me/accounts"})).into_response()
}

pub(super) async fn positions(
    State(s): St,
    headers: HeaderMap,
    Path(account): Path<String>,
) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    let Some(a) = s.account_index(&account) else {
        return error(
            StatusCode::NOT_FOUND,
            "record_not_found",
            "account not found",
        );
    };
    let items: Vec<Value> = (0..s.venue.instruments.len())
        .filter(|&i| s.venue.quantity(a, i) != 0)
        .map(|i| s.venue.position_row(&account, a, i))
        .collect();
    Json(json!({"data": {"items": items}, "context": format!("/accounts/{account}/positions")}))
        .into_response()
}

pub(super) async fn quote_token(State(s): St, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    let token = s.issue(&s.quote_tokens, "sim-quote", s.cfg.quote_token_ttl);
    s.stats.quote_tokens_issued.fetch_add(1, Relaxed);
    let scheme = if s.cfg.tls { "wss" } else { "ws" };
    Json(
        json!({"data": {"token": token, "dxlink-url": format!("{scheme}://{}/dxlink", s.addr),
        "level": "api"}, "context": "/api-quote-tokens"}),
    )
    .into_response()
}

pub(super) async fn position_change(
    State(s): St,
    Path(account): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let symbol = body.get("symbol").and_then(Value::as_str).unwrap_or("");
    let quantity = body.get("quantity").and_then(Value::as_i64).unwrap_or(0);
    if set_position(&s, &account, symbol, quantity) {
        Json(json!({"account": account, "symbol": symbol, "quantity": quantity})).into_response()
    } else {
        kit::sim_error(StatusCode::NOT_FOUND, "unknown account or symbol")
    }
}

pub(super) async fn dxlink_upgrade(State(s): St, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| dxlink_connection(s, socket))
}

pub(super) async fn streamer_upgrade(State(s): St, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| streamer_connection(s, socket))
}
