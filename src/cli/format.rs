//! Output formats shared by the listing and inspect commands: Go-template fields (`{{.ID}}`,
//! `{{.State.Status}}`, `{{json .Mounts}}`, `{{range .Networks}}…{{end}}`) over a JSON value,
//! as Docker's `--format` reads, and a listing's `table`, `table TEMPLATE` and `json`.

use serde_json::{Map, Value};

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

/// A parsed template.
#[derive(Debug)]
enum Node {
    Text(String),
    Field {
        json: bool,
        path: String,
    },
    /// `{{range .Path}}BODY{{end}}`: BODY once per element of a list, or per value of a map
    /// (in key order, as Go's templates).
    Range {
        path: String,
        body: Vec<Node>,
    },
}

fn parse(template: &str) -> Result<Vec<Node>, String> {
    // The open `range`s, innermost last, each with the nodes before it.
    let mut stack: Vec<(String, Vec<Node>)> = vec![];
    let mut nodes = vec![];
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            nodes.push(Node::Text(unescape(&rest[..start])));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in --format {template:?}"))?;
        let action = after[..end].trim();
        rest = &after[end + 2..];
        if let Some(path) = action.strip_prefix("range ") {
            stack.push((path.trim().to_string(), std::mem::take(&mut nodes)));
        } else if action == "end" {
            let (path, before) = stack.pop().ok_or_else(|| {
                format!("--format {template:?}: {{{{end}}}} without {{{{range}}}}")
            })?;
            let body = std::mem::replace(&mut nodes, before);
            nodes.push(Node::Range { path, body });
        } else {
            let (json, path) = match action.strip_prefix("json ") {
                Some(p) => (true, p.trim()),
                None => (false, action),
            };
            if !path.starts_with('.') {
                return Err(format!(
                    "--format {template:?}: {{{{{action}}}}} is not supported: use {{{{.Field}}}}, {{{{json .Field}}}} or {{{{range .Field}}}}…{{{{end}}}}"
                ));
            }
            nodes.push(Node::Field {
                json,
                path: path.to_string(),
            });
        }
    }
    if !stack.is_empty() {
        return Err(format!(
            "--format {template:?}: {{{{range}}}} without {{{{end}}}}"
        ));
    }
    if !rest.is_empty() {
        nodes.push(Node::Text(unescape(rest)));
    }
    Ok(nodes)
}

fn unescape(text: &str) -> String {
    text.replace("\\t", "\t").replace("\\n", "\n")
}

fn no_field(path: &str) -> String {
    format!("--format: no field {path:?} (see `--format json` for the fields)")
}

fn exec(nodes: &[Node], v: &Value, out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Field { json, path } => {
                let value = lookup(v, path).ok_or_else(|| no_field(path))?;
                if *json {
                    out.push_str(&value.to_string());
                } else {
                    out.push_str(&plain(value));
                }
            }
            Node::Range { path, body } => match lookup(v, path).ok_or_else(|| no_field(path))? {
                Value::Array(items) => {
                    for item in items {
                        exec(body, item, out)?;
                    }
                }
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    for k in keys {
                        exec(body, &map[k], out)?;
                    }
                }
                Value::Null => {}
                other => return Err(format!("--format: cannot range over {path} ({other})")),
            },
        }
    }
    Ok(())
}

/// Renders `template` over `v`: `{{.A.B}}`, `{{json .A}}`, `{{.}}`,
/// `{{range .A}}…{{end}}`; `\t` and `\n` escapes. A field `v` does not have is an error.
pub fn render(template: &str, v: &Value) -> Result<String, String> {
    let nodes = parse(template)?;
    let mut out = String::new();
    exec(&nodes, v, &mut out)?;
    Ok(out)
}

/// What a listing prints for `--format`, other than its own table (`None` for that: no
/// `--format`, or `table`): `json`, one object a line as Docker prints it; a template, one
/// line per row; `table TEMPLATE`, a header and the rows in aligned columns. `fields` names
/// every field a row has, with its column header (`ID` -> `IMAGE ID`): a template naming
/// another field is an error, also when there are no rows.
pub fn listing(
    format: Option<&str>,
    rows: &[Value],
    fields: &[(&str, &str)],
) -> Result<Option<String>, String> {
    let format = match format.map(str::trim) {
        None | Some("") | Some("table") => return Ok(None),
        Some(f) => f,
    };
    if format == "json" {
        return Ok(Some(rows.iter().map(|r| format!("{r}\n")).collect()));
    }
    let (table, template) = match format.strip_prefix("table ") {
        Some(t) => (true, t),
        None => (false, format),
    };
    let example = Value::Object(
        fields
            .iter()
            .map(|(f, _)| (f.to_string(), Value::Null))
            .collect::<Map<_, _>>(),
    );
    render(template, &example)?;
    let mut lines = vec![];
    if table {
        let nodes = parse(template)?;
        let mut header = String::new();
        for n in &nodes {
            match n {
                Node::Text(t) => header.push_str(t),
                Node::Field { path, .. } | Node::Range { path, .. } => {
                    let name = path.trim_start_matches('.');
                    let title = fields
                        .iter()
                        .find(|(f, _)| *f == name)
                        .map_or_else(|| name.to_uppercase(), |(_, h)| h.to_string());
                    header.push_str(&title);
                }
            }
        }
        lines.push(header);
    }
    for r in rows {
        lines.push(render(template, r)?);
    }
    let mut out = String::new();
    if table {
        let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
        let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        for row in &cells {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<width$}   ", width = widths[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    } else {
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(Some(out))
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

    #[test]
    fn ranges_over_maps_in_key_order_and_lists() {
        let v = json!({"N": {"b": {"IP": "10.0.0.2"}, "a": {"IP": "10.0.0.1"}}, "L": [1, 2]});
        assert_eq!(
            render("{{range .N}}{{.IP}};{{end}}", &v).unwrap(),
            "10.0.0.1;10.0.0.2;"
        );
        assert_eq!(render("<{{range .L}}{{.}}{{end}}>", &v).unwrap(), "<12>");
        assert!(render("{{range .N}}{{.Nope}}{{end}}", &v).is_err());
        assert!(render("{{range .N}}", &v).is_err());
        assert!(render("{{end}}", &v).is_err());
        assert!(render("{{index .N 0}}", &v).is_err());
    }

    #[test]
    fn listings_print_json_templates_and_tables() {
        let rows = [
            json!({"Repository": "a/b", "Tag": "1", "ID": "123"}),
            json!({"Repository": "long/name", "Tag": "latest", "ID": "4"}),
        ];
        let fields = [
            ("Repository", "REPOSITORY"),
            ("Tag", "TAG"),
            ("ID", "IMAGE ID"),
        ];
        assert_eq!(listing(None, &rows, &fields).unwrap(), None);
        assert_eq!(listing(Some("table"), &rows, &fields).unwrap(), None);
        assert_eq!(
            listing(Some("{{.Repository}}:{{.Tag}}"), &rows, &fields).unwrap(),
            Some("a/b:1\nlong/name:latest\n".into())
        );
        assert_eq!(
            listing(Some("table {{.ID}}\\t{{.Repository}}"), &rows, &fields).unwrap(),
            Some("IMAGE ID   REPOSITORY\n123        a/b\n4          long/name\n".into())
        );
        let json = listing(Some("json"), &rows, &fields).unwrap().unwrap();
        assert_eq!(json.lines().count(), 2);
        assert_eq!(
            serde_json::from_str::<Value>(json.lines().next().unwrap()).unwrap(),
            rows[0]
        );
        // An unknown field is an error, with rows or without.
        assert!(listing(Some("{{.Nope}}"), &rows, &fields).is_err());
        assert!(listing(Some("{{.Nope}}"), &[], &fields).is_err());
        assert_eq!(
            listing(Some("{{.ID}}"), &[], &fields).unwrap(),
            Some(String::new())
        );
    }
}
