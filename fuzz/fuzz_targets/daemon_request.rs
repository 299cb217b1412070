//! One control-socket request line, as any local client could send it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::daemon::protocol::{Response, parse_request};

fuzz_target!(|data: &[u8]| {
    let (id, parsed) = parse_request(data);
    // Whatever comes in, the answer is one well-formed JSON line.
    let answer = match parsed {
        Ok(_) => Response::ok(id, serde_json::Value::Null),
        Err(e) => Response::err(id, e),
    };
    let line = answer.line();
    assert!(!line.trim_end().contains('\n'), "answer spans lines");
    serde_json::from_str::<serde_json::Value>(&line).expect("answer is JSON");
});
