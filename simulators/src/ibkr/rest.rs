//! The gateway's REST routes (tickle, auth status, accounts, paged positions, SSO,
//! logout), the WebSocket upgrade, and the `/sim/` controls (faults, positions).

#[allow(unused_imports)]
use super::*;

pub(super) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/api/tickle", get(tickle).post(tickle))
        .route(
            "/v1/api/iserver/auth/status",
            get(auth_status).post(auth_status),
        )
        .route(
            "/v1/api/iserver/reauthenticate",
            get(reauthenticate).post(reauthenticate),
        )
        .route("/v1/api/iserver/auth/ssodh/init", post(reauthenticate))
        .route("/v1/api/iserver/accounts", get(iserver_accounts))
        .route("/v1/api/portfolio/accounts", get(portfolio_accounts))
        .route("/v1/api/portfolio/subaccounts", get(portfolio_accounts))
        .route(
            "/v1/api/portfolio/{account}/positions/{page}",
            get(positions),
        )
        .route("/v1/api/sso/validate", get(sso_validate))
        .route("/v1/api/logout", post(logout))
        .route("/v1/api/ws", get(ws_upgrade))
        .route("/sim/fault/{name}", post(kit::fault::<SimState>))
        .route("/sim/position/{account}", post(position_change))
        .with_state(state)
}

pub(super) type St = State<Arc<SimState>>;

pub(super) async fn tickle(State(s): St) -> Json<Value> {
    s.stats.tickles.fetch_add(1, Relaxed);
    Json(json!({
        "session": s.session(), "ssoExpires": 460311, "collission": false, "userId": 123456789,
        "hmds": {"error": "no bridge"}, "iserver": {"authStatus": s.auth_status()}
    }))
}

pub(super) async fn auth_status(State(s): St) -> Json<Value> {
    Json(s.auth_status())
}

pub(super) async fn reauthenticate(State(s): St) -> Json<Value> {
    s.stats.reauthentications.fetch_add(1, Relaxed);
    let state = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep(state.cfg.reauth_delay).await;
        state.authenticated.store(true, Relaxed);
    });
    Json(json!({"message": "triggered"}))
}

pub(super) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "not authenticated", "statusCode": 401})),
    )
        .into_response()
}

pub(super) async fn iserver_accounts(State(s): St) -> Response {
    if !s.authenticated.load(Relaxed) {
        return unauthorized();
    }
    let accounts = &s.cfg.accounts;
    Json(json!({
        "accounts": accounts, "aliases": {}, "selectedAccount": accounts.first(),
        "allowFeatures": {}, "chartPeriods": {}, "groups": [], "profiles": [],
        "isPaper": true, "isFT": false
    }))
    .into_response()
}

pub(super) async fn portfolio_accounts(State(s): St) -> Response {
    if !s.authenticated.load(Relaxed) {
        return unauthorized();
    }
    let rows: Vec<Value> = s
        .cfg
        .accounts
        .iter()
        .map(|a| {
            json!({
                "id": a, "accountId": a, "accountVan": a, "accountTitle": "greekstream sim",
                "displayName": a, "accountAlias": null, "accountStatus": 1_700_000_000_000i64,
                "currency": "USD", "type": "DEMO", "tradingType": "PMRGN", "faclient": false,
                "clearingStatus": "O", "covestor": false, "parent": {}, "desc": a
            })
        })
        .collect();
    Json(Value::Array(rows)).into_response()
}

pub(super) async fn positions(
    State(s): St,
    Path((account, page)): Path<(String, usize)>,
) -> Response {
    if !s.authenticated.load(Relaxed) {
        return unauthorized();
    }
    let Some(acct_idx) = s.cfg.accounts.iter().position(|a| *a == account) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid account"})),
        )
            .into_response();
    };
    let rows: Vec<Value> = s
        .venue
        .holdings()
        .iter()
        .filter(|h| h.account == acct_idx)
        .skip(page.saturating_mul(s.cfg.page_size))
        .take(s.cfg.page_size)
        .map(|h| s.venue.position_row(h, &account))
        .collect();
    Json(Value::Array(rows)).into_response()
}

pub(super) async fn sso_validate(State(s): St) -> Json<Value> {
    Json(
        json!({"USER_ID": 123456789, "USER_NAME": "greeksim", "RESULT": s.authenticated.load(Relaxed)}),
    )
}

pub(super) async fn logout(State(s): St) -> Json<Value> {
    s.authenticated.store(false, Relaxed);
    Json(json!({"status": true}))
}

/// `POST /sim/position/{account}` `{"conid": 265598, "quantity": 0}`: opens,
/// changes or (at 0) closes a holding, as a trade or an expiry would; the REST reads
/// show it from then on.
pub(super) async fn position_change(
    State(s): St,
    Path(account): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let conid = body.get("conid").and_then(Value::as_i64);
    let quantity = body.get("quantity").and_then(Value::as_i64);
    let (Some(conid), Some(quantity)) = (conid, quantity) else {
        return kit::sim_error(
            StatusCode::BAD_REQUEST,
            "body must be {\"conid\": <integer>, \"quantity\": <integer>}",
        );
    };
    if set_position(&s, &account, conid, quantity) {
        Json(json!({"account": account, "conid": conid, "quantity": quantity})).into_response()
    } else {
        kit::sim_error(StatusCode::NOT_FOUND, "unknown account or conid")
    }
}

pub(super) async fn ws_upgrade(
    State(s): St,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let cookie_session = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(wire::session_from_cookie);
    if let Some(session) = &cookie_session {
        if *session != s.session() {
            return unauthorized();
        }
    }
    let authed = cookie_session.is_some();
    upgrade.on_upgrade(move |socket| connection(s, socket, authed))
}
