//! REST work beside the sockets: the access and quote tokens, and the positions read.

use super::*;

pub(super) async fn keep_access_token(rest: Rest, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let wait = rest.access_token_due_in().await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        let before = rest.stats.access_tokens.load(Relaxed);
        match rest.access_token(false).await {
            Ok(_) => {
                shared.set_authenticated(true);
                if rest.stats.access_tokens.load(Relaxed) != before {
                    metrics::counter!(TOKEN_REFRESHES, "token" => "access").increment(1);
                }
            }
            Err(err) => {
                if matches!(err, RestError::Unauthorized { .. }) {
                    shared.set_authenticated(false);
                }
                tracing::warn!(error = %err, "Tastytrade access token refresh failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        }
    }
}

pub(super) async fn fetch_quote_token(
    rest: &Rest,
    shared: &Shared,
) -> Result<(QuoteToken, u64), RestError> {
    let token = rest.quote_token().await?;
    // An authenticated REST call succeeded: the credentials work.
    shared.set_authenticated(true);
    metrics::counter!(TOKEN_REFRESHES, "token" => "quote").increment(1);
    let mut slot = shared.quote_token.lock().expect("token lock");
    let generation = slot.as_ref().map_or(1, |(_, g)| g + 1);
    *slot = Some((token.clone(), generation));
    Ok((token, generation))
}

pub(super) async fn keep_quote_token(
    rest: Rest,
    renew_after: Duration,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut wait = renew_after;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        wait = match fetch_quote_token(&rest, &shared).await {
            Ok(_) => renew_after,
            Err(err) => {
                tracing::warn!(error = %err, "Tastytrade quote token renewal failed; retrying");
                Duration::from_secs(2).min(renew_after)
            }
        };
    }
}

pub(super) async fn poll_positions(
    rest: Rest,
    every: Duration,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        match read_positions(&rest, &shared).await {
            Ok(()) => failures = 0,
            Err(err) => {
                failures += 1;
                if matches!(err, RestError::Unauthorized { .. }) {
                    shared.set_authenticated(false);
                }
                if failures <= 3 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %err, failures, "Tastytrade positions refresh failed; keeping the last book");
                }
            }
        }
        // Retry soon after a failure rather than a whole period later.
        let wait = if (1..=3).contains(&failures) {
            Duration::from_millis(500)
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.refresh_positions.notified() => {}
            _ = cancel.cancelled() => return,
        }
    }
}

pub(super) async fn read_positions(rest: &Rest, shared: &Shared) -> Result<(), RestError> {
    let started = Instant::now();
    let accounts = rest.accounts().await?;
    shared.set_authenticated(true);
    let mut fetched = Vec::with_capacity(accounts.len());
    for account in &accounts {
        let (good, bad) = rest.positions(account).await?;
        for b in &bad {
            shared.malformed("position row", "", b);
        }
        fetched.push((account.clone(), good));
    }
    let changed = {
        let mut book = shared.book.lock().expect("book lock");
        let before = book.version;
        let mut changed = Vec::new();
        for (account, positions) in fetched {
            changed.extend(book.replace_account(&account, positions, started));
        }
        book.positions
            .retain(|(a, _), _| accounts.iter().any(|x| **a == **x));
        book.accounts = accounts;
        let n = book.positions.len();
        shared.stats.positions.store(n as u64, Relaxed);
        metrics::gauge!(POSITIONS, "broker" => BROKER.as_str()).set(n as f64);
        if book.version != before {
            tracing::info!(
                positions = n,
                subscriptions = book.wanted.len(),
                "Tastytrade positions changed"
            );
        }
        changed
    };
    let quotes: Vec<TtQuote> = {
        let wanted: std::collections::HashSet<String> = shared
            .book
            .lock()
            .expect("book lock")
            .wanted
            .iter()
            .map(|(_, sym)| sym.clone())
            .collect();
        let mut market = shared.market.lock().expect("market lock");
        let quotes = changed.into_iter().map(|p| market.quote_for(p)).collect();
        // Market data of symbols no longer wanted is dropped: memory follows the
        // holdings, not everything ever held.
        market.greeks.retain(|sym, _| wanted.contains(sym));
        market.quotes.retain(|sym, _| wanted.contains(sym));
        quotes
    };
    for quote in quotes {
        if !shared.emit(quote).await {
            break;
        }
    }
    Ok(())
}

impl Shared {
    /// A connection cannot be prepared: refused credentials are a state to wait
    /// in, anything else is retried with backoff.
    pub(super) fn prepare_error(&self, err: RestError) -> PrepareError {
        match err {
            RestError::Unauthorized { .. } => {
                self.set_authenticated(false);
                PrepareError::NotAuthenticated(err.to_string())
            }
            other => PrepareError::Failed(other.to_string()),
        }
    }
}
