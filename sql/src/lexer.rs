//! The lexer: application code to tokens, each with its 1-based line and column.
//!
//! Follows the lexical rules of the Kinesis Data Analytics SQL reference ("Identifiers",
//! "Literals"): unquoted identifiers are upper-cased, `"quoted"` ones keep their case
//! (`""` inside is a quote), string literals use `''` for a quote, `--` comments run to
//! the end of the line and `/* */` comments may span lines. Never panics; a character it
//! does not know is an error at its position.

use crate::SqlError;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An unquoted identifier or keyword, upper-cased.
    Word(String),
    /// A `"quoted"` identifier, case preserved.
    Quoted(String),
    /// A `'string'` literal with `''` unescaped.
    Str(String),
    /// A numeric literal as written (digits, optional `.` and exponent).
    Number(String),
    /// Punctuation and operators: `( ) , ; . * + - / % = <> != < > <= >= ||`.
    Sym(&'static str),
    Eof,
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: u32,
    pub column: u32,
}

impl Token {
    /// The token as the error messages quote it.
    pub fn describe(&self) -> String {
        match &self.tok {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(q) => format!("\"{q}\""),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Number(n) => n.clone(),
            Tok::Sym(s) => (*s).to_string(),
            Tok::Eof => "<EOF>".to_string(),
        }
    }
}

/// The longest application code accepted, in bytes (the service's limit is 100,000
/// characters; the cap keeps the parser's work bounded on untrusted input).
pub(crate) const MAX_CODE_BYTES: usize = 400_000;

const SYMBOLS: [&str; 19] = [
    "<>", "!=", "<=", ">=", "||", "(", ")", ",", ";", ".", "*", "+", "-", "/", "%", "=", "<", ">",
    "[",
];

/// Splits `code` into tokens, ending with [`Tok::Eof`].
pub(crate) fn tokenize(code: &str) -> Result<Vec<Token>, SqlError> {
    if code.len() > MAX_CODE_BYTES {
        return Err(SqlError {
            line: 1,
            column: 1,
            message: format!("application code longer than {MAX_CODE_BYTES} bytes"),
        });
    }
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    let err = |line, column, message: String| SqlError {
        line,
        column,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let (tl, tc) = (line, col);
        // Advances over n characters, keeping line and column.
        macro_rules! bump {
            ($n:expr) => {
                for _ in 0..$n {
                    if i < chars.len() {
                        if chars[i] == '\n' {
                            line += 1;
                            col = 1;
                        } else {
                            col += 1;
                        }
                        i += 1;
                    }
                }
            };
        }
        if c.is_whitespace() {
            bump!(1);
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                bump!(1);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            bump!(2);
            loop {
                if i >= chars.len() {
                    return Err(err(tl, tc, "unterminated comment".into()));
                }
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    bump!(2);
                    break;
                }
                bump!(1);
            }
            continue;
        }
        let tok = if c.is_alphabetic() || c == '_' || c == '$' {
            let mut w = String::new();
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                w.extend(chars[i].to_uppercase());
                bump!(1);
            }
            Tok::Word(w)
        } else if c == '"' || c == '\'' {
            bump!(1);
            let mut s = String::new();
            loop {
                if i >= chars.len() {
                    let what = if c == '"' {
                        "identifier"
                    } else {
                        "string literal"
                    };
                    return Err(err(tl, tc, format!("unterminated quoted {what}")));
                }
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        s.push(c);
                        bump!(2);
                        continue;
                    }
                    bump!(1);
                    break;
                }
                s.push(chars[i]);
                bump!(1);
            }
            if c == '"' {
                if s.is_empty() {
                    return Err(err(tl, tc, "empty quoted identifier".into()));
                }
                Tok::Quoted(s)
            } else {
                Tok::Str(s)
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let mut n = String::new();
            while i < chars.len() && chars[i].is_ascii_digit() {
                n.push(chars[i]);
                bump!(1);
            }
            if i < chars.len() && chars[i] == '.' {
                n.push('.');
                bump!(1);
                while i < chars.len() && chars[i].is_ascii_digit() {
                    n.push(chars[i]);
                    bump!(1);
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let sign = matches!(chars.get(i + 1), Some('+') | Some('-'));
                let digit_at = if sign { i + 2 } else { i + 1 };
                if chars.get(digit_at).is_some_and(|d| d.is_ascii_digit()) {
                    n.push('E');
                    bump!(1);
                    if sign {
                        n.push(chars[i]);
                        bump!(1);
                    }
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        n.push(chars[i]);
                        bump!(1);
                    }
                }
            }
            Tok::Number(n)
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            match SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
                Some(s) if *s != "[" => {
                    bump!(s.chars().count());
                    Tok::Sym(s)
                }
                _ => {
                    return Err(err(
                        tl,
                        tc,
                        format!("Lexical error: unexpected character '{c}'"),
                    ));
                }
            }
        };
        out.push(Token {
            tok,
            line: tl,
            column: tc,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        column: col,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn words_are_upper_cased_and_quoted_keep_case() {
        assert_eq!(
            toks("select \"Ticker\" from x"),
            vec![
                Tok::Word("SELECT".into()),
                Tok::Quoted("Ticker".into()),
                Tok::Word("FROM".into()),
                Tok::Word("X".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn strings_numbers_comments_and_positions() {
        let t = tokenize("-- c\n  'it''s' /* x\ny */ 1.5e3 <> a||b").unwrap();
        assert_eq!(t[0].tok, Tok::Str("it's".into()));
        assert_eq!((t[0].line, t[0].column), (2, 3));
        assert_eq!(t[1].tok, Tok::Number("1.5E3".into()));
        assert_eq!((t[1].line, t[1].column), (3, 6));
        assert_eq!(t[2].tok, Tok::Sym("<>"));
        assert_eq!(t[4].tok, Tok::Sym("||"));
    }

    #[test]
    fn errors_have_positions() {
        let e = tokenize("a\n  'open").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
        let e = tokenize("a ?").unwrap_err();
        assert_eq!((e.line, e.column), (1, 3));
        assert!(tokenize("/* never closed").is_err());
    }
}
