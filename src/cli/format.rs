//! Output formats shared by the listing commands: Go-template fields (`{{.ID}}`,
//! `{{.State.Status}}`, `{{json .Mounts}}`) over a JSON value, as Docker's `--format` reads.

use serde_json::Value;

/// The value at a dotted path (`.State.Status`; `.` is the whole value).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    if path == "." {
        return Some(v);
    }
    let mut cur = v;
    for key in path.strip_prefix('.')?.split('.') {
        cur = cur.get(key)?;
    }
    Some(cur)
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(plain).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", plain(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// Renders `template` over `v`: `{{.A.B}}`, `{{json .A}}`, `{{.}}`; `\t` and `\n` escapes.
pub fn render(template: &str, v: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in --format {template:?}"))?;
        let action = after[..end].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p),
            None => (false, action),
        };
        let value = lookup(v, path).ok_or_else(|| {
            format!("--format: no field {path:?} (see `--format json` for the fields)")
        })?;
        if json {
            out.push_str(&value.to_string());
        } else {
            out.push_str(&plain(value));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out.replace("\\t", "\t").replace("\\n", "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_paths_and_json() {
        let v = json!({"ID": "abc", "State": {"Status": "running", "Pid": 7}, "L": ["a", "b"]});
        assert_eq!(render("{{.ID}}", &v).unwrap(), "abc");
        assert_eq!(
            render("{{.State.Status}} {{.State.Pid}}", &v).unwrap(),
            "running 7"
        );
        assert_eq!(render("{{json .L}}", &v).unwrap(), r#"["a","b"]"#);
        assert_eq!(render("{{.ID}}\\t{{.L}}", &v).unwrap(), "abc\t[a b]");
        assert!(render("{{.Nope}}", &v).is_err());
        assert!(render("{{.ID", &v).is_err());
    }
}
