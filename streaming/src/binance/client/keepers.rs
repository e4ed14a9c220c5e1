//! REST work beside the sockets: server time, exchangeInfo, the positions read
//! (reconcile) and the listen key's keepalive.

use super::*;

pub(super) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

pub(super) async fn keep_time(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let wait = match shared.rest.sync_time().await {
            Ok(_) => shared.cfg.time_sync_every,
            Err(e) => {
                shared.rest_failed("time sync", &e);
                e_wait(&e).min(shared.cfg.time_sync_every)
            }
        };
        if !sleep_or_cancel(wait, &cancel).await {
            return;
        }
    }
}

pub(super) async fn keep_exchange_info(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let wait = match shared.rest.exchange_info().await {
            Ok(symbols) => {
                let mut st = shared.state.lock().expect("state lock");
                st.info = symbols.into_iter().map(|s| (s.symbol.clone(), s)).collect();
                Duration::from_secs(3600)
            }
            Err(e) => {
                shared.rest_failed("exchangeInfo", &e);
                e_wait(&e)
            }
        };
        if !sleep_or_cancel(wait, &cancel).await {
            return;
        }
    }
}

/// How long to wait after a failed call: the pause when rate limited, else briefly.
pub(super) fn e_wait(e: &RestError) -> Duration {
    match e {
        RestError::Paused { retry_in, .. } => *retry_in,
        _ => Duration::from_secs(2),
    }
}

pub(super) async fn poll_positions(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let wait = match reconcile(&shared).await {
            Ok(()) => shared.cfg.positions_refresh,
            Err(e) => {
                shared.rest_failed("positionRisk", &e);
                e_wait(&e).min(shared.cfg.positions_refresh)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.refresh_positions.notified() => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Reads every position and brings the book in line with it, emitting a row for
/// each one that changed (closed ones with quantity 0). Futures come from
/// positionRisk; options, when an options host is configured, from
/// `/eapi/v1/position`. A failed options read keeps the option positions as they
/// were rather than closing them.
pub(super) async fn reconcile(shared: &Shared) -> Result<(), RestError> {
    let started = Instant::now();
    let (rows, bad) = shared.rest.position_risk().await?;
    shared.set_authenticated(true);
    for b in &bad {
        shared.malformed("positionRisk row", "", b);
    }
    // The totals are for operators and risk; a failed read does not hold up positions.
    match shared.rest.account().await {
        Ok(a) => shared.publish_account(a),
        Err(e) => shared.rest_failed("account", &e),
    }
    let options = match &shared.options {
        Some(rest) => read_options(shared, rest).await,
        None => None,
    };
    shared.stats.reconciles.fetch_add(1, Relaxed);
    let changed: Vec<BnQuote> = {
        let mut st = shared.state.lock().expect("state lock");
        let mut seen = BTreeSet::new();
        let mut held = Vec::new();
        for r in rows {
            if r.mark_price > Decimal::ZERO && !st.marks.contains_key(&r.symbol) {
                st.marks.insert(
                    r.symbol.clone(),
                    Arc::new(MarkPrice {
                        symbol: r.symbol.clone(),
                        // Observed now: the row's updateTime is when the position
                        // last changed, which can be weeks ago.
                        event_time: Utc::now().timestamp_millis(),
                        mark: r.mark_price,
                        index: None,
                        funding_rate: None,
                        next_funding_time: None,
                    }),
                );
            }
            held.push((r.symbol, r.position_side, r.amount, r.entry_price));
        }
        let options_known = options.is_some();
        if let Some((positions, marks)) = options {
            // `/eapi/v1/mark` lists every option: keep the held ones' only.
            let held_options: BTreeSet<&str> =
                positions.iter().map(|o| o.symbol.as_str()).collect();
            for m in marks
                .into_iter()
                .filter(|m| held_options.contains(m.symbol.as_str()))
            {
                st.option_marks
                    .entry(m.symbol.clone())
                    .or_insert_with(|| Arc::new(m));
            }
            for o in positions {
                held.push((o.symbol, "BOTH".to_owned(), o.quantity, o.entry_price));
            }
        }
        let mut changed = Vec::new();
        st.streamed.retain(|_, at| at.elapsed() < STREAMED_MEMORY);
        // What the user stream changed after this read began is newer than the read.
        let fresher: BTreeSet<PositionKey> = st
            .streamed
            .iter()
            .filter(|(_, at)| **at >= started)
            .map(|(k, _)| k.clone())
            .collect();
        for (symbol, side, amount, entry) in held {
            let key = (symbol.clone(), side.clone());
            seen.insert(key.clone());
            if fresher.contains(&key) {
                continue;
            }
            let p = st.position(&shared.account, &symbol, &side, amount, entry);
            if let Some(p) = st.upsert(p) {
                changed.push(st.quote(p));
            }
        }
        let gone: Vec<Arc<BnPosition>> = st
            .positions
            .iter()
            .filter(|(k, p)| {
                !seen.contains(*k)
                    && !fresher.contains(*k)
                    && (options_known || p.kind != BnKind::Option)
            })
            .map(|(_, p)| p.clone())
            .collect();
        for old in gone {
            let p = st.position(
                &shared.account,
                &old.symbol,
                &old.position_side,
                Decimal::ZERO,
                old.entry_price,
            );
            if let Some(p) = st.upsert(p) {
                changed.push(st.quote(p));
            }
        }
        shared.publish_positions_gauge(st.positions.len());
        changed
    };
    for q in changed {
        shared.emit(q).await;
    }
    Ok(())
}

/// Option positions and, when there are any, their marks and Greeks (so the first
/// row of a new option has Greeks, not a missing leg until the stream speaks).
/// `None` when the read failed: the caller must not take that as "no options".
pub(super) async fn read_options(
    shared: &Shared,
    rest: &Rest,
) -> Option<(Vec<wire::OptionPosition>, Vec<OptionMark>)> {
    let (positions, bad) = match rest.option_positions().await {
        Ok(v) => v,
        Err(e) => {
            shared.rest_failed("option positions", &e);
            return None;
        }
    };
    for b in &bad {
        shared.malformed("option position row", "", b);
    }
    let unknown_unit = {
        let st = shared.state.lock().expect("state lock");
        positions
            .iter()
            .any(|p| !st.option_units.contains_key(&p.symbol))
    };
    if unknown_unit {
        match rest.option_units().await {
            Ok(units) => {
                let mut st = shared.state.lock().expect("state lock");
                let held: BTreeSet<&str> = positions.iter().map(|p| p.symbol.as_str()).collect();
                st.option_units = units
                    .into_iter()
                    .filter(|(s, _)| held.contains(s.as_str()))
                    .collect();
            }
            Err(e) => shared.rest_failed("option exchangeInfo", &e),
        }
    }
    let marks = if positions.is_empty() {
        Vec::new()
    } else {
        rest.option_marks().await.unwrap_or_else(|e| {
            shared.rest_failed("option marks", &e);
            Vec::new()
        })
    };
    Some((positions, marks))
}

pub(super) async fn keep_listen_key(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut wait = shared.cfg.listen_key_keepalive;
    loop {
        if !sleep_or_cancel(wait, &cancel).await {
            return;
        }
        wait = shared.cfg.listen_key_keepalive;
        match shared.rest.keepalive_listen_key().await {
            Ok(()) => {}
            // Held back by a rate-limit pause: keep the key alive as soon as the
            // pause ends, not a whole keepalive period later.
            Err(RestError::Paused { retry_in, .. }) => wait = retry_in,
            Err(e) => {
                shared.rest_failed("listen key keepalive", &e);
                if e.code() == Some(-1125) || e.is_auth() {
                    shared.listen_key_invalid.store(true, Relaxed);
                }
            }
        }
    }
}
