//! Binary operators: arithmetic, comparison (with and without `bool`) and
//! set operators, with `on` / `ignoring` / `group_left` / `group_right`
//! vector matching.
//!
//! Matching signatures depend only on labels, so they are computed once per
//! series; per step the engine only checks which candidates have a value.
//! The many-to-many and duplicate-match errors are detected per step, as in
//! Prometheus, so series that never coexist do not conflict.

use std::collections::HashMap;

use promql_parser::parser::token;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::engine::{Eval, Evaluator};
use super::value::{Grid, StepSeries};
use super::QueryError;
use crate::tsdb::labels::{Labels, METRIC_NAME};

/// Evaluates a binary expression over the grid.
pub(crate) fn eval_binary(ev: &mut Evaluator<'_>, b: &BinaryExpr, grid: &Grid) -> Result<Eval, QueryError> {
    let op = b.op.id();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, grid)?;
    let rhs = ev.eval(&b.rhs, grid)?;
    match (lhs, rhs) {
        (Eval::Scalar(l), Eval::Scalar(r)) => {
            let v = l
                .iter()
                .zip(&r)
                .map(|(&a, &b)| {
                    if is_comparison(op) {
                        bool_f(compare(op, a, b))
                    } else {
                        arith(op, a, b)
                    }
                })
                .collect();
            Ok(Eval::Scalar(v))
        }
        (Eval::Vector(v), Eval::Scalar(s)) => Ok(Eval::Vector(vector_scalar(op, v, &s, false, return_bool))),
        (Eval::Scalar(s), Eval::Vector(v)) => Ok(Eval::Vector(vector_scalar(op, v, &s, true, return_bool))),
        (Eval::Vector(l), Eval::Vector(r)) => {
            let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
            match op {
                token::T_LAND | token::T_LOR | token::T_LUNLESS => {
                    Ok(Eval::Vector(set_op(op, l, r, matching.as_ref(), grid.n)))
                }
                _ => {
                    let card = b
                        .modifier
                        .as_ref()
                        .map(|m| m.card.clone())
                        .unwrap_or(VectorMatchCardinality::OneToOne);
                    Ok(Eval::Vector(vector_vector(
                        ev,
                        op,
                        l,
                        r,
                        matching.as_ref(),
                        &card,
                        return_bool,
                        grid.n,
                    )?))
                }
            }
        }
        _ => Err(QueryError::BadData(
            "binary operators are only defined on scalars and instant vectors".into(),
        )),
    }
}

fn is_comparison(op: u16) -> bool {
    matches!(
        op,
        token::T_EQLC | token::T_NEQ | token::T_GTR | token::T_LSS | token::T_GTE | token::T_LTE
    )
}

fn bool_f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The result of an arithmetic operator on two floats (Go semantics).
pub(crate) fn arith(op: u16, l: f64, r: f64) -> f64 {
    match op {
        token::T_ADD => l + r,
        token::T_SUB => l - r,
        token::T_MUL => l * r,
        token::T_DIV => l / r,
        token::T_MOD => l % r,
        token::T_POW => l.powf(r),
        token::T_ATAN2 => l.atan2(r),
        _ => f64::NAN,
    }
}

/// The truth of a comparison operator.
pub(crate) fn compare(op: u16, l: f64, r: f64) -> bool {
    match op {
        token::T_EQLC => l == r,
        token::T_NEQ => l != r,
        token::T_GTR => l > r,
        token::T_LSS => l < r,
        token::T_GTE => l >= r,
        token::T_LTE => l <= r,
        _ => false,
    }
}

/// Vector-scalar operations; `scalar_left` when the scalar is the left operand.
fn vector_scalar(op: u16, mut v: Vec<StepSeries>, s: &[f64], scalar_left: bool, return_bool: bool) -> Vec<StepSeries> {
    let cmp = is_comparison(op);
    for series in &mut v {
        if !cmp || return_bool {
            series.drop_name = true;
        }
        for (i, slot) in series.vals.iter_mut().enumerate() {
            let Some(x) = *slot else { continue };
            let (l, r) = if scalar_left { (s[i], x) } else { (x, s[i]) };
            *slot = if cmp {
                let c = compare(op, l, r);
                if return_bool {
                    Some(bool_f(c))
                } else if c {
                    // A filter keeps the vector's own value, whichever side it is on.
                    Some(x)
                } else {
                    None
                }
            } else {
                Some(arith(op, l, r))
            };
        }
    }
    v.retain(StepSeries::has_any);
    v
}

/// The matching signature of a series: the labels that must be equal on
/// both sides.
fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.keep_only(&on.labels),
        Some(LabelModifier::Exclude(ign)) => {
            let mut l = labels.drop_names(&ign.labels);
            l.remove(METRIC_NAME);
            l
        }
        None => labels.without_metric_name(),
    }
}

/// `and`, `or`, `unless`, decided per step.
fn set_op(
    op: u16,
    lhs: Vec<StepSeries>,
    rhs: Vec<StepSeries>,
    matching: Option<&LabelModifier>,
    n: usize,
) -> Vec<StepSeries> {
    let lsig: Vec<Labels> = lhs.iter().map(|s| signature(&s.labels, matching)).collect();
    let rsig: Vec<Labels> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
    // For each step, is some series with this signature present on a side?
    let presence = |series: &[StepSeries], sigs: &[Labels]| -> HashMap<Labels, Vec<bool>> {
        let mut m: HashMap<Labels, Vec<bool>> = HashMap::new();
        for (s, sig) in series.iter().zip(sigs) {
            let p = m.entry(sig.clone()).or_insert_with(|| vec![false; n]);
            for (slot, v) in p.iter_mut().zip(&s.vals) {
                *slot |= v.is_some();
            }
        }
        m
    };
    match op {
        token::T_LAND | token::T_LUNLESS => {
            let rp = presence(&rhs, &rsig);
            let keep_if_present = op == token::T_LAND;
            let mut out = lhs;
            for (s, sig) in out.iter_mut().zip(&lsig) {
                let p = rp.get(sig);
                for (i, slot) in s.vals.iter_mut().enumerate() {
                    let present = p.is_some_and(|p| p[i]);
                    if present != keep_if_present {
                        *slot = None;
                    }
                }
            }
            out.retain(StepSeries::has_any);
            out
        }
        _ => {
            let lp = presence(&lhs, &lsig);
            let mut out = lhs;
            for (mut s, sig) in rhs.into_iter().zip(&rsig) {
                if let Some(p) = lp.get(sig) {
                    for (i, slot) in s.vals.iter_mut().enumerate() {
                        if p[i] {
                            *slot = None;
                        }
                    }
                }
                if s.has_any() {
                    out.push(s);
                }
            }
            out
        }
    }
}

/// Prometheus's text form of a label set, name included: `{__name__="x", a="b"}`.
fn labels_string(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|l| format!("{}={:?}", l.name, l.value)).collect();
    format!("{{{}}}", parts.join(", "))
}

/// The indices of `series` by their match signature.
fn group_by_signature(series: &[StepSeries], matching: Option<&LabelModifier>) -> HashMap<Labels, Vec<usize>> {
    let mut by_sig: HashMap<Labels, Vec<usize>> = HashMap::new();
    for (i, s) in series.iter().enumerate() {
        by_sig.entry(signature(&s.labels, matching)).or_default().push(i);
    }
    by_sig
}

/// In one-to-one matching, records that a "one" side series was matched at
/// step `i`; a second match at the same step is Prometheus's error.
fn match_once(matched_at: &mut usize, i: usize) -> Result<(), QueryError> {
    if *matched_at == i {
        return Err(QueryError::Execution(
            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
        ));
    }
    *matched_at = i;
    Ok(())
}

/// Which steps have a value in any of `series`.
fn present_steps(series: &[StepSeries], n: usize) -> Vec<bool> {
    let mut present = vec![false; n];
    for s in series {
        for (p, v) in present.iter_mut().zip(&s.vals) {
            *p |= v.is_some();
        }
    }
    present
}

/// Fails as Prometheus does when two series of the "one" side share a match
/// group at a step where the "many" side has a value.
fn check_one_side_unique(
    one: &[StepSeries],
    one_by_sig: &HashMap<Labels, Vec<usize>>,
    many_present: &[bool],
    swapped: bool,
) -> Result<(), QueryError> {
    for (sig, members) in one_by_sig.iter().filter(|(_, v)| v.len() > 1) {
        for (i, &any_many) in many_present.iter().enumerate() {
            if !any_many {
                continue;
            }
            let present: Vec<usize> = members.iter().copied().filter(|&o| one[o].vals[i].is_some()).collect();
            if present.len() > 1 {
                let side = if swapped { "left" } else { "right" };
                let mut names = [
                    labels_string(&one[present[0]].labels),
                    labels_string(&one[present[1]].labels),
                ];
                names.sort();
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    labels_string(sig),
                    names[0],
                    names[1]
                )));
            }
        }
    }
    Ok(())
}

/// The result of `lv op rv`: arithmetic, or a comparison that keeps the
/// left value (`None` when it filters the pair out) or gives 0/1 with `bool`.
fn combine(op: u16, cmp: bool, return_bool: bool, lv: f64, rv: f64) -> Option<f64> {
    if !cmp {
        return Some(arith(op, lv, rv));
    }
    let c = compare(op, lv, rv);
    if return_bool {
        Some(bool_f(c))
    } else if c {
        Some(lv)
    } else {
        None
    }
}

/// Arithmetic and comparison between two vectors.
#[allow(clippy::too_many_arguments)]
fn vector_vector(
    ev: &mut Evaluator<'_>,
    op: u16,
    lhs: Vec<StepSeries>,
    rhs: Vec<StepSeries>,
    matching: Option<&LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
    n: usize,
) -> Result<Vec<StepSeries>, QueryError> {
    let cmp = is_comparison(op);
    // The "one" side must be unique per signature; for group_right it is the left.
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (&rhs, &lhs) } else { (&lhs, &rhs) };
    let include: &[String] = match card {
        VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => &l.labels,
        _ => &[],
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let one_by_sig = group_by_signature(one, matching);
    // Resolve each many-side series' candidates once, not at every step.
    let cands_of: Vec<Option<&Vec<usize>>> = many
        .iter()
        .map(|s| one_by_sig.get(&signature(&s.labels, matching)))
        .collect();
    // Which steps have any value on each side (the duplicate check only
    // applies where both sides are non-empty, as in Prometheus).
    let many_present = present_steps(many, n);
    let one_present = present_steps(one, n);
    check_one_side_unique(one, &one_by_sig, &many_present, swapped)?;
    let drop = !cmp || return_bool;
    let mut out: Vec<StepSeries> = Vec::new();
    let mut out_index: HashMap<(Labels, bool), usize> = HashMap::new();
    let mut pair_cache: HashMap<(usize, usize), usize> = HashMap::new();
    let mut one_matched_at: Vec<usize> = vec![usize::MAX; one.len()];
    for i in 0..n {
        if i % 256 == 0 {
            ev.check_timeout()?;
        }
        if !many_present[i] || !one_present[i] {
            continue;
        }
        for (m, ms) in many.iter().enumerate() {
            let Some(mv) = ms.vals[i] else { continue };
            let Some(cands) = cands_of[m] else { continue };
            let Some(&o) = cands.iter().find(|&&o| one[o].vals[i].is_some()) else {
                continue;
            };
            let ov = one[o].vals[i].unwrap_or(f64::NAN);
            if one_to_one {
                match_once(&mut one_matched_at[o], i)?;
            }
            let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
            let Some(value) = combine(op, cmp, return_bool, lv, rv) else {
                continue;
            };
            let idx = match pair_cache.get(&(m, o)) {
                Some(&idx) => idx,
                None => {
                    let labels = result_labels(&ms.labels, &one[o].labels, matching, one_to_one, include);
                    let drop_name = drop || ms.drop_name;
                    let idx = *out_index.entry((labels.clone(), drop_name)).or_insert_with(|| {
                        out.push(StepSeries::empty(labels, drop_name, n));
                        out.len() - 1
                    });
                    pair_cache.insert((m, o), idx);
                    idx
                }
            };
            let slot = &mut out[idx].vals[i];
            if slot.is_some() {
                return Err(QueryError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches".into(),
                ));
            }
            *slot = Some(value);
        }
    }
    out.retain(StepSeries::has_any);
    Ok(out)
}

/// Labels of a vector-vector result: the many side's labels, reduced to the
/// matching labels for one-to-one `on`, minus `ignoring` labels for
/// one-to-one, plus the `group_x` labels copied from the one side.
fn result_labels(
    many: &Labels,
    one: &Labels,
    matching: Option<&LabelModifier>,
    one_to_one: bool,
    include: &[String],
) -> Labels {
    let mut l = many.clone();
    if one_to_one {
        match matching {
            Some(LabelModifier::Include(on)) => l = l.keep_only(&on.labels),
            Some(LabelModifier::Exclude(ign)) => l = l.drop_names(&ign.labels),
            None => {}
        }
    }
    for name in include {
        l.set(name, one.get(name));
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(pairs: &[(&str, &str)], vals: &[Option<f64>]) -> StepSeries {
        StepSeries {
            labels: Labels::from_pairs(pairs.iter().copied()),
            drop_name: false,
            vals: vals.to_vec(),
        }
    }

    #[test]
    fn set_ops_decide_per_step() {
        let l = vec![series(&[("a", "1")], &[Some(1.0), Some(2.0)])];
        let r = vec![series(&[("a", "1")], &[None, Some(5.0)])];
        let and = set_op(token::T_LAND, l.clone(), r.clone(), None, 2);
        assert_eq!(and[0].vals, vec![None, Some(2.0)]);
        let unless = set_op(token::T_LUNLESS, l.clone(), r.clone(), None, 2);
        assert_eq!(unless[0].vals, vec![Some(1.0), None]);
        let or = set_op(token::T_LOR, r, l, None, 2);
        assert_eq!(or.len(), 2);
        assert_eq!(or[1].vals, vec![Some(1.0), None]);
    }

    #[test]
    fn group_left_copies_include_labels() {
        let many = Labels::from_pairs([("__name__", "x"), ("a", "1"), ("b", "2")]);
        let one = Labels::from_pairs([("__name__", "y"), ("a", "1"), ("c", "3")]);
        let on = LabelModifier::include(vec!["a"]);
        let l = result_labels(&many, &one, Some(&on), false, &["c".to_string()]);
        assert_eq!(l.get("c"), "3");
        assert_eq!(l.get("b"), "2");
        let l = result_labels(&many, &one, Some(&on), true, &[]);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn signature_ignores_name_unless_on_lists_it() {
        let l = Labels::from_pairs([("__name__", "x"), ("a", "1")]);
        assert_eq!(signature(&l, None), Labels::from_pairs([("a", "1")]));
        let on = LabelModifier::include(vec!["__name__"]);
        assert_eq!(signature(&l, Some(&on)).metric_name(), "x");
    }
}
