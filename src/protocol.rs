//! TEMP STUB — replaced by the real parser at merge.
pub const MAX_LINE_BYTES: usize = 4096;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrCode { BadReq, Unknown, NoTopic, Exists, TooBig, ReadOnly, NoAuth, Busy, Internal }
impl ErrCode { pub fn as_str(self) -> &'static str { "BADREQ" } }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError { pub code: ErrCode, pub msg: String }
impl ProtoError { pub fn new(code: ErrCode, msg: impl Into<String>) -> Self { ProtoError { code, msg: msg.into() } } }
#[derive(Debug, Clone, Copy)]
pub struct Limits { pub max_payload: usize, pub max_batch: usize }
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message { pub headers: Vec<u8>, pub payload: Vec<u8> }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubFrom { After(u64), Latest, Committed }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubArgs { pub topic: String, pub from: SubFrom, pub batch: Option<usize>, pub ack_ms: Option<u64>, pub group: Option<String> }
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request { Ping, Auth { token: String }, Quit, Create { topic: String, life_ms: u64 }, Delete { topic: String }, Pub { topic: String, msg: Message }, MPub { topic: String, msgs: Vec<Message> }, DPub { topic: String, delay_ms: u64, msg: Message }, Info { topic: String }, List, Stats, Sub(SubArgs), Ack, Stop, Groups { topic: String }, Repl { after: u64 }, Promote }
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed { NeedMore, Request { req: Request, consumed: usize }, Error { err: ProtoError, consumed: usize }, Fatal { err: ProtoError } }
pub fn parse_request(_buf: &[u8], _limits: &Limits) -> Parsed { Parsed::NeedMore }
pub fn encode_ok(_out: &mut Vec<u8>, _values: &[u64]) {}
pub fn encode_err(_out: &mut Vec<u8>, _err: &ProtoError) {}
pub fn encode_msg(_out: &mut Vec<u8>, _event_id: u64, _timestamp_ms: u64, _headers: &[u8], _payload: &[u8]) {}
pub fn encode_topic(_out: &mut Vec<u8>, _name: &str, _created_ms: u64, _expires_ms: u64, _messages: u64, _first_id: u64, _last_id: u64) {}
pub fn encode_line(_out: &mut Vec<u8>, _line: &str) {}
