//! NLTK's Porter stemmer in its default `NLTK_EXTENSIONS` mode (nltk 3.x `nltk.stem.porter`),
//! which is what Google's `rouge-score` uses with `use_stemmer=True`. Input is lowercase ASCII
//! (rouge-score's tokenizer guarantees `[a-z0-9]+`); other text is stemmed bytewise.

/// Stem one word as `nltk.stem.porter.PorterStemmer().stem(word)` does.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(irregular) = irregular(&lower) {
        return irregular.to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w = lower.into_bytes();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    String::from_utf8(w).unwrap_or_default()
}

fn irregular(word: &str) -> Option<&'static str> {
    Some(match word {
        "sky" | "skies" => "sky",
        "dying" => "die",
        "lying" => "lie",
        "tying" => "tie",
        "news" => "news",
        "innings" | "inning" => "inning",
        "outings" | "outing" => "outing",
        "cannings" | "canning" => "canning",
        "howe" => "howe",
        "proceed" => "proceed",
        "exceed" => "exceed",
        "succeed" => "succeed",
        _ => return None,
    })
}

fn is_vowel(c: u8) -> bool {
    matches!(c, b'a' | b'e' | b'i' | b'o' | b'u')
}

fn is_consonant(w: &[u8], mut i: usize) -> bool {
    if is_vowel(w[i]) {
        return false;
    }
    if w[i] == b'y' {
        let mut negate = false;
        while i > 0 && w[i] == b'y' {
            negate = !negate;
            i -= 1;
        }
        return (!is_vowel(w[i])) != negate;
    }
    true
}

fn consonant_flags(w: &[u8]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == b'y' {
            if i == 0 { true } else { !flags[i - 1] }
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

fn measure(stem: &[u8]) -> usize {
    let flags = consonant_flags(stem);
    flags.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(stem: &[u8]) -> bool {
    !consonant_flags(stem).iter().all(|&c| c)
}

fn ends_double_consonant(w: &[u8]) -> bool {
    w.len() >= 2 && w[w.len() - 1] == w[w.len() - 2] && is_consonant(w, w.len() - 1)
}

fn ends_cvc(w: &[u8]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], b'w' | b'x' | b'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

type Cond<'a> = &'a dyn Fn(&[u8]) -> bool;

/// A rule: suffix (`"*d"` = a double consonant), replacement, optional condition on the stem.
struct Rule<'a>(&'a str, &'a str, Option<Cond<'a>>);

fn apply_rules(w: Vec<u8>, rules: &[Rule]) -> Vec<u8> {
    for Rule(suffix, replacement, cond) in rules {
        if *suffix == "*d" && ends_double_consonant(&w) {
            let stem = &w[..w.len() - 2];
            return if cond.is_none_or(|c| c(stem)) { [stem, replacement.as_bytes()].concat() } else { w };
        }
        if w.ends_with(suffix.as_bytes()) {
            let stem = &w[..w.len() - suffix.len()];
            return if cond.is_none_or(|c| c(stem)) { [stem, replacement.as_bytes()].concat() } else { w };
        }
    }
    w
}

fn replace_suffix(w: &[u8], suffix: &str, replacement: &str) -> Vec<u8> {
    [&w[..w.len() - suffix.len()], replacement.as_bytes()].concat()
}

fn step1a(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"ies") && w.len() == 4 {
        return replace_suffix(&w, "ies", "ie");
    }
    apply_rules(w, &[Rule("sses", "ss", None), Rule("ies", "i", None), Rule("ss", "ss", None), Rule("s", "", None)])
}

fn step1b(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"ied") {
        return if w.len() == 4 { replace_suffix(&w, "ied", "ie") } else { replace_suffix(&w, "ied", "i") };
    }
    if w.ends_with(b"eed") {
        let stem = &w[..w.len() - 3];
        return if measure(stem) > 0 { [stem, b"ee"].concat() } else { w };
    }
    let mut intermediate: Option<Vec<u8>> = None;
    for suffix in ["ed", "ing"] {
        if w.ends_with(suffix.as_bytes()) {
            let stem = &w[..w.len() - suffix.len()];
            if contains_vowel(stem) {
                intermediate = Some(stem.to_vec());
                break;
            }
        }
    }
    let Some(stem) = intermediate else { return w };
    let last = stem.last().copied();
    let last_str = last.map(|c| (c as char).to_string()).unwrap_or_default();
    let double_ok = |_: &[u8]| last.is_some_and(|c| !matches!(c, b'l' | b's' | b'z'));
    let add_e = |s: &[u8]| measure(s) == 1 && ends_cvc(s);
    apply_rules(
        stem.clone(),
        &[
            Rule("at", "ate", None),
            Rule("bl", "ble", None),
            Rule("iz", "ize", None),
            Rule("*d", &last_str, Some(&double_ok)),
            Rule("", "e", Some(&add_e)),
        ],
    )
}

fn step1c(w: Vec<u8>) -> Vec<u8> {
    let cond = |s: &[u8]| s.len() > 1 && is_consonant(s, s.len() - 1);
    apply_rules(w, &[Rule("y", "i", Some(&cond))])
}

fn positive(s: &[u8]) -> bool {
    measure(s) > 0
}

fn step2(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"alli") && positive(&w[..w.len() - 4]) {
        return step2(replace_suffix(&w, "alli", "al"));
    }
    let logi_word = w.clone();
    let logi = move |_: &[u8]| logi_word.len() >= 3 && positive(&logi_word[..logi_word.len() - 3]);
    let p: Cond = &positive;
    apply_rules(
        w,
        &[
            Rule("ational", "ate", Some(p)),
            Rule("tional", "tion", Some(p)),
            Rule("enci", "ence", Some(p)),
            Rule("anci", "ance", Some(p)),
            Rule("izer", "ize", Some(p)),
            Rule("bli", "ble", Some(p)),
            Rule("alli", "al", Some(p)),
            Rule("entli", "ent", Some(p)),
            Rule("eli", "e", Some(p)),
            Rule("ousli", "ous", Some(p)),
            Rule("ization", "ize", Some(p)),
            Rule("ation", "ate", Some(p)),
            Rule("ator", "ate", Some(p)),
            Rule("alism", "al", Some(p)),
            Rule("iveness", "ive", Some(p)),
            Rule("fulness", "ful", Some(p)),
            Rule("ousness", "ous", Some(p)),
            Rule("aliti", "al", Some(p)),
            Rule("iviti", "ive", Some(p)),
            Rule("biliti", "ble", Some(p)),
            Rule("fulli", "ful", Some(p)),
            Rule("logi", "log", Some(&logi)),
        ],
    )
}

fn step3(w: Vec<u8>) -> Vec<u8> {
    let p: Cond = &positive;
    apply_rules(
        w,
        &[
            Rule("icate", "ic", Some(p)),
            Rule("ative", "", Some(p)),
            Rule("alize", "al", Some(p)),
            Rule("iciti", "ic", Some(p)),
            Rule("ical", "ic", Some(p)),
            Rule("ful", "", Some(p)),
            Rule("ness", "", Some(p)),
        ],
    )
}

fn step4(w: Vec<u8>) -> Vec<u8> {
    let gt1 = |s: &[u8]| measure(s) > 1;
    let ion = |s: &[u8]| measure(s) > 1 && matches!(s.last(), Some(b's' | b't'));
    let g: Cond = &gt1;
    let suffixes = [
        "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism", "ate",
        "iti", "ous", "ive", "ize",
    ];
    let rules: Vec<Rule> =
        suffixes.iter().map(|s| Rule(s, "", Some(if *s == "ion" { &ion as Cond } else { g }))).collect();
    apply_rules(w, &rules)
}

fn step5a(w: Vec<u8>) -> Vec<u8> {
    if w.ends_with(b"e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w
}

fn step5b(w: Vec<u8>) -> Vec<u8> {
    let word = w.clone();
    let cond = move |_: &[u8]| measure(&word[..word.len() - 1]) > 1;
    apply_rules(w, &[Rule("ll", "l", Some(&cond))])
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn known_stems() {
        for (word, expected) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("dying", "die"),
            ("controlling", "control"),
            ("national", "nation"),
        ] {
            assert_eq!(stem(word), expected, "{word}");
        }
    }
}
