//! Loops without a user task (DESIGN §12). A token only stops at a user task, a join that waits,
//! or an end event, so a cycle of gateways with no user task on it lets a token circle until the
//! step budget fails the instance (before there was a budget, the recursive walk overflowed the
//! stack and aborted the server at StartProcess). A cycle is refused at deploy even if its
//! conditions look as if it could never be taken: conditions depend on variables, the refusal
//! must not.
//!
//! The graph is searched for strongly connected components with Tarjan's algorithm, written with
//! an explicit stack: a definition may hold thousands of gateways in a row.
use std::collections::{HashSet, VecDeque};

use super::definition::{Flow, Node, NodeIdx, NodeKind};

/// The most element ids one error lists.
const MAX_LISTED: usize = 20;

/// One error per loop that has no user task: the loop's first element in document order, and a
/// reason listing the elements of one cycle through it, in order.
pub fn loops_without_user_task(nodes: &[Node], flows: &[Flow]) -> Vec<(String, String)> {
    let passes = |idx: NodeIdx| {
        nodes
            .get(idx)
            .is_some_and(|node| !matches!(node.kind, NodeKind::UserTask(_)))
    };
    let mut successors: Vec<Vec<NodeIdx>> = vec![Vec::new(); nodes.len()];
    for flow in flows {
        if passes(flow.source)
            && passes(flow.target)
            && let Some(next) = successors.get_mut(flow.source)
        {
            next.push(flow.target);
        }
    }
    let mut errors = Vec::new();
    for component in strongly_connected(&successors) {
        let Some(&first) = component.iter().min() else {
            continue;
        };
        let looping = component.len() > 1 || successors[first].contains(&first);
        if !looping {
            continue;
        }
        let members: HashSet<NodeIdx> = component.iter().copied().collect();
        let cycle = cycle_through(first, &members, &successors);
        let mut names: Vec<&str> = cycle
            .iter()
            .take(MAX_LISTED)
            .map(|&idx| nodes[idx].id.as_str())
            .collect();
        if cycle.len() > MAX_LISTED {
            names.push("…");
        }
        names.push(nodes[first].id.as_str());
        errors.push((
            nodes[first].id.clone(),
            format!(
                "a loop without a user task: {}; a token would circle without ever waiting. \
                 Put a user task on the loop or remove the flow that closes it",
                names.join(" → ")
            ),
        ));
    }
    errors
}

/// Tarjan's strongly connected components, iteratively.
fn strongly_connected(successors: &[Vec<NodeIdx>]) -> Vec<Vec<NodeIdx>> {
    const UNVISITED: usize = usize::MAX;
    let n = successors.len();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<NodeIdx> = Vec::new();
    let mut next_index = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        // (node, position in its successor list)
        let mut calls: Vec<(NodeIdx, usize)> = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(top) = calls.last_mut() {
            let v = top.0;
            if let Some(&w) = successors[v].get(top.1) {
                top.1 += 1;
                if index[w] == UNVISITED {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// A shortest cycle from `start` back to itself inside `members` (breadth first), without the
/// closing repetition of `start`.
fn cycle_through(
    start: NodeIdx,
    members: &HashSet<NodeIdx>,
    successors: &[Vec<NodeIdx>],
) -> Vec<NodeIdx> {
    let mut parent: Vec<Option<NodeIdx>> = vec![None; successors.len()];
    let mut queue = VecDeque::from([start]);
    let mut seen: HashSet<NodeIdx> = HashSet::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &successors[v] {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut path = vec![v];
                let mut at = v;
                while let Some(p) = parent[at] {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                return path;
            }
            if seen.insert(w) {
                parent[w] = Some(v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_found_without_recursion() {
        // 0 → 1 → 2 → 0, 3 → 3, 4 alone, and a chain of 100,000 that would overflow a recursive
        // search.
        let mut successors = vec![vec![1], vec![2], vec![0], vec![3], vec![]];
        let base = successors.len();
        for i in 0..100_000 {
            successors.push(vec![base + i + 1]);
        }
        successors.push(vec![]);
        let components = strongly_connected(&successors);
        let mut big: Vec<Vec<NodeIdx>> = components
            .into_iter()
            .filter(|c| c.len() > 1 || c == &vec![3])
            .map(|mut c| {
                c.sort();
                c
            })
            .collect();
        big.sort();
        assert_eq!(big, vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn the_cycle_is_listed_in_order() {
        let successors = vec![vec![1], vec![2, 3], vec![0], vec![]];
        let members: HashSet<NodeIdx> = [0, 1, 2].into_iter().collect();
        assert_eq!(cycle_through(0, &members, &successors), vec![0, 1, 2]);
    }
}
