//! The client side of one DXLink connection as a pure state machine: which message
//! to send next in SETUP → AUTH → CHANNEL_REQUEST → FEED_SETUP/FEED_SUBSCRIPTION,
//! and what each server message means in each phase. No IO: the WebSocket handler
//! feeds it messages and carries out the [`Step`] it returns.

use super::dxlink::{self, parse_feed_data, DxMessage, FeedBatch, FeedConfig};

/// Where the handshake stands on the current socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// SETUP sent; waiting for the server's AUTH_STATE.
    AwaitingAuthState,
    /// AUTH sent; waiting for AUTHORIZED.
    Authorizing,
    /// CHANNEL_REQUEST sent; waiting for CHANNEL_OPENED.
    OpeningChannel,
    /// FEED_SETUP and every subscription sent; data flows.
    Streaming,
    /// The server withdrew authorization mid-stream (token expiry); a fresh AUTH
    /// was sent on the same socket, so the channel and its subscriptions stay.
    Reauthorizing,
}

/// What the handler must do after a message.
#[derive(Debug, PartialEq)]
pub enum Step {
    Nothing,
    /// Send these messages.
    Send(Vec<String>),
    /// Send AUTH with the current quote token.
    Authorize,
    /// The channel is open: send FEED_SETUP and every subscription.
    Subscribe,
    /// Authorization came back after a renewal: re-send every subscription
    /// (idempotent on the server) in case it dropped any.
    Resubscribe,
    /// The token was withdrawn mid-stream: fetch a fresh one and AUTH again.
    Reauthorize,
    /// Decoded market data.
    Data(FeedBatch),
    /// A message that does not fit the protocol: count it and carry on.
    Malformed(String),
    /// A KEEPALIVE: the server is alive.
    Alive,
    /// Drop this socket and start over (the reason becomes a metric label).
    Reconnect(&'static str),
}

#[derive(Debug)]
pub struct FeedSession {
    pub phase: Phase,
    pub channel: u64,
    config: FeedConfig,
    /// The server's own keepalive timeout from its SETUP, seconds.
    pub server_keepalive: Option<u64>,
}

impl FeedSession {
    /// A new socket: the first message to send is [`dxlink::setup`].
    pub fn new(channel: u64) -> Self {
        Self {
            phase: Phase::AwaitingAuthState,
            channel,
            config: FeedConfig::default(),
            server_keepalive: None,
        }
    }

    /// The handler sent AUTH with a fresh token while streaming.
    pub fn reauthorizing(&mut self) {
        self.phase = Phase::Reauthorizing;
    }

    pub fn on_message(&mut self, msg: DxMessage) -> Step {
        use Phase::*;
        let ours = self.channel;
        match (self.phase, msg) {
            (_, DxMessage::Keepalive) => Step::Alive,
            (_, DxMessage::Setup { keepalive_timeout }) => {
                self.server_keepalive = keepalive_timeout;
                Step::Nothing
            }
            (_, DxMessage::Error { error, message }) => {
                tracing::warn!(%error, %message, "DXLink server error");
                Step::Reconnect("server_error")
            }
            (AwaitingAuthState, DxMessage::AuthState { authorized: false }) => {
                self.phase = Authorizing;
                Step::Authorize
            }
            (AwaitingAuthState | Authorizing, DxMessage::AuthState { authorized: true }) => {
                self.phase = OpeningChannel;
                Step::Send(vec![dxlink::channel_request(ours)])
            }
            (Authorizing | OpeningChannel, DxMessage::AuthState { authorized: false }) => {
                Step::Reconnect("auth_rejected")
            }
            (Streaming, DxMessage::AuthState { authorized: false }) => Step::Reauthorize,
            (Reauthorizing, DxMessage::AuthState { authorized: false }) => {
                Step::Reconnect("auth_rejected")
            }
            (Reauthorizing, DxMessage::AuthState { authorized: true }) => {
                self.phase = Streaming;
                Step::Resubscribe
            }
            (OpeningChannel | Streaming, DxMessage::AuthState { authorized: true }) => {
                Step::Nothing
            }
            (OpeningChannel, DxMessage::ChannelOpened { channel }) if channel == ours => {
                self.phase = Streaming;
                Step::Subscribe
            }
            (_, DxMessage::ChannelOpened { channel }) => {
                Step::Malformed(format!("unexpected CHANNEL_OPENED for channel {channel}"))
            }
            (_, DxMessage::ChannelClosed { channel }) if channel == ours => {
                Step::Reconnect("channel_closed")
            }
            (_, DxMessage::ChannelClosed { .. }) => Step::Nothing,
            (_, DxMessage::FeedConfig { channel, config }) if channel == ours => {
                self.config = config;
                Step::Nothing
            }
            (Streaming | Reauthorizing, DxMessage::FeedData { channel, data })
                if channel == ours =>
            {
                match parse_feed_data(&data, &self.config) {
                    Ok(batch) => Step::Data(batch),
                    Err(err) => Step::Malformed(err.to_string()),
                }
            }
            (_, DxMessage::FeedConfig { channel, .. } | DxMessage::FeedData { channel, .. }) => {
                Step::Malformed(format!("feed message on channel {channel} out of turn"))
            }
            (_, DxMessage::Other(kind)) => {
                tracing::debug!(%kind, "DXLink message ignored");
                Step::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tastytrade::dxlink::parse_message;

    fn step(s: &mut FeedSession, text: &str) -> Step {
        s.on_message(parse_message(text).unwrap())
    }

    #[test]
    fn the_documented_handshake_runs_in_order() {
        let mut s = FeedSession::new(3);
        assert_eq!(
            step(
                &mut s,
                r#"{"type":"SETUP","channel":0,"keepaliveTimeout":60,"acceptKeepaliveTimeout":60,"version":"1"}"#
            ),
            Step::Nothing
        );
        assert_eq!(s.server_keepalive, Some(60));
        assert_eq!(
            step(
                &mut s,
                r#"{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}"#
            ),
            Step::Authorize
        );
        let Step::Send(msgs) = step(
            &mut s,
            r#"{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED"}"#,
        ) else {
            panic!("expected CHANNEL_REQUEST");
        };
        assert!(msgs[0].contains("CHANNEL_REQUEST"));
        assert_eq!(
            step(
                &mut s,
                r#"{"type":"CHANNEL_OPENED","channel":1,"service":"FEED"}"#
            ),
            Step::Malformed("unexpected CHANNEL_OPENED for channel 1".into())
        );
        assert_eq!(
            step(
                &mut s,
                r#"{"type":"CHANNEL_OPENED","channel":3,"service":"FEED"}"#
            ),
            Step::Subscribe
        );
        step(
            &mut s,
            r#"{"type":"FEED_CONFIG","channel":3,"dataFormat":"COMPACT","eventFields":{"Greeks":["eventSymbol","delta"]}}"#,
        );
        let Step::Data(batch) = step(
            &mut s,
            r#"{"type":"FEED_DATA","channel":3,"data":["Greeks",[".A",0.5,".B","NaN"]]}"#,
        ) else {
            panic!("expected data");
        };
        assert_eq!(batch.events.len(), 2);
        assert_eq!(s.phase, Phase::Streaming);
    }

    #[test]
    fn rejection_expiry_errors_and_stray_data() {
        let mut s = FeedSession::new(3);
        assert!(matches!(
            step(&mut s, r#"{"type":"FEED_DATA","channel":3,"data":[]}"#),
            Step::Malformed(_)
        ));
        step(
            &mut s,
            r#"{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}"#,
        );
        assert_eq!(
            step(
                &mut s,
                r#"{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}"#
            ),
            Step::Reconnect("auth_rejected"),
            "a second UNAUTHORIZED answers our AUTH"
        );

        let mut s = FeedSession::new(3);
        s.phase = Phase::Streaming;
        assert_eq!(
            step(
                &mut s,
                r#"{"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}"#
            ),
            Step::Reauthorize
        );
        s.reauthorizing();
        assert_eq!(
            step(
                &mut s,
                r#"{"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED"}"#
            ),
            Step::Resubscribe
        );
        assert_eq!(
            step(&mut s, r#"{"type":"KEEPALIVE","channel":0}"#),
            Step::Alive
        );
        assert_eq!(
            step(
                &mut s,
                r#"{"type":"ERROR","channel":0,"error":"TIMEOUT","message":"x"}"#
            ),
            Step::Reconnect("server_error")
        );
        assert_eq!(
            step(&mut s, r#"{"type":"CHANNEL_CLOSED","channel":3}"#),
            Step::Reconnect("channel_closed")
        );
        assert!(matches!(
            step(&mut s, r#"{"type":"FEED_DATA","channel":3,"data":{"x":1}}"#),
            Step::Malformed(_)
        ));
    }
}
