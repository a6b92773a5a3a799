//! The relation graph of an entity (`GET /entities/{bp}/{id}/graph?hops=N`): its neighbourhood to N hops in
//! both directions, laid out in layers by the server and drawn as SVG. What the entity points at (upstream)
//! goes to the right, what points at it (downstream) to the left; every node links to its page.

use std::collections::{BTreeMap, HashMap, VecDeque};

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_model::Entity;
use berth_server::AppState;
use berth_server::access::Scoped;

use crate::entity::entity_href;
use crate::fmt::esc;
use crate::form::Query;
use crate::page::{Layout, UiResult, html};
use crate::session::Session;

/// The most nodes drawn (the rest is summarised).
pub const MAX_NODES: usize = 80;
pub const MAX_HOPS: usize = 4;

const COL_W: i64 = 240;
const ROW_H: i64 = 64;
const NODE_W: i64 = 190;
const NODE_H: i64 = 44;

type Node = (String, String);

/// A layered neighbourhood: node → layer (0 is the entity, >0 upstream, <0 downstream), and the edges
/// (from, to, relation). `truncated` when [`MAX_NODES`] cut it short.
pub struct Neighbourhood {
    pub layers: HashMap<Node, i64>,
    pub edges: Vec<(Node, Node, String)>,
    pub truncated: bool,
}

/// The walk goes only through entities the caller of `scoped` may read: a hidden entity is neither shown nor
/// walked through.
pub fn neighbourhood(scoped: &Scoped<'_>, bp: &str, id: &str, hops: usize) -> Neighbourhood {
    let state = scoped.state();
    let visible = |b: &str, i: &str| scoped.entity(b, i).is_some();
    let start: Node = (bp.to_string(), id.to_string());
    let mut layers = HashMap::from([(start.clone(), 0i64)]);
    let mut queue = VecDeque::from([(start, 0usize)]);
    let mut edges = Vec::new();
    let mut truncated = false;
    while let Some((node, depth)) = queue.pop_front() {
        let layer = layers[&node];
        let mut next: Vec<(Node, i64, (Node, Node, String))> = Vec::new();
        if let Some(e) = scoped.entity(&node.0, &node.1) {
            let Some(def) = state.blueprint(&node.0) else { continue };
            for (rel, value) in &e.relations {
                let Some(r) = def.def.relations.get(rel) else { continue };
                for t in Entity::relation_targets(value) {
                    let to: Node = (r.target.clone(), t.to_string());
                    next.push((to.clone(), layer + 1, (node.clone(), to, rel.to_string())));
                }
            }
        }
        for edge in state.incoming(&node.0, &node.1) {
            let from: Node = (edge.blueprint().to_string(), edge.identifier.to_string());
            next.push((from.clone(), layer - 1, (from, node.clone(), edge.relation().to_string())));
        }
        for (other, other_layer, edge) in next {
            let known = layers.contains_key(&other);
            if !known && !visible(&other.0, &other.1) {
                continue;
            }
            if !known {
                if depth >= hops {
                    continue;
                }
                if layers.len() >= MAX_NODES {
                    truncated = true;
                    continue;
                }
                layers.insert(other.clone(), other_layer);
                queue.push_back((other, depth + 1));
            }
            if !edges.contains(&edge) {
                edges.push(edge);
            }
        }
    }
    Neighbourhood { layers, edges, truncated }
}

/// Draws a neighbourhood as SVG (safe HTML), with the titles the caller of `scoped` may read.
pub fn svg(scoped: &Scoped<'_>, n: &Neighbourhood, centre: &Node) -> String {
    let mut by_layer: BTreeMap<i64, Vec<&Node>> = BTreeMap::new();
    for (node, layer) in &n.layers {
        by_layer.entry(*layer).or_default().push(node);
    }
    let min_layer = by_layer.keys().next().copied().unwrap_or(0);
    let tallest = by_layer.values().map(Vec::len).max().unwrap_or(1) as i64;
    let mut pos: HashMap<&Node, (i64, i64)> = HashMap::new();
    for (layer, nodes) in by_layer.iter_mut() {
        nodes.sort();
        let offset = (tallest - nodes.len() as i64) * ROW_H / 2;
        for (i, node) in nodes.iter().enumerate() {
            pos.insert(node, ((layer - min_layer) * COL_W + 20, offset + i as i64 * ROW_H + 20));
        }
    }
    let width = by_layer.len() as i64 * COL_W + 20;
    let height = tallest * ROW_H + 40;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="Relation graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>"#
    );
    for (from, to, rel) in &n.edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(from), pos.get(to)) else { continue };
        let (sx, sy, ex, ey) = if x1 <= x2 {
            (x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2)
        } else {
            (x1, y1 + NODE_H / 2, x2 + NODE_W, y2 + NODE_H / 2)
        };
        out.push_str(&format!(
            r#"<path class="edge" d="M {sx} {sy} C {} {sy}, {} {ey}, {ex} {ey}" marker-end="url(#arrow)"><title>{}</title></path>"#,
            (sx + ex) / 2,
            (sx + ex) / 2,
            esc(rel)
        ));
    }
    let mut nodes: Vec<(&&Node, &(i64, i64))> = pos.iter().collect();
    nodes.sort();
    for (node, (x, y)) in nodes {
        let title = scoped.title(&node.0, &node.1).map_or_else(|| node.1.clone(), str::to_string);
        let short: String = if title.chars().count() > 24 {
            format!("{}…", title.chars().take(23).collect::<String>())
        } else {
            title.clone()
        };
        let class = if *node == centre { "node centre" } else { "node" };
        out.push_str(&format!(
            r#"<a href="{href}" class="{class}" data-node="{id}"><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/><text x="{tx}" y="{ty}" class="label">{label}</text><text x="{tx}" y="{by}" class="bp">{bp}</text><title>{full}</title></a>"#,
            href = esc(&entity_href(&node.0, &node.1)),
            id = esc(&node.1),
            tx = x + 10,
            ty = y + 19,
            by = y + 35,
            label = esc(&short),
            bp = esc(&node.0),
            full = esc(&format!("{title} ({})", node.0)),
        ));
    }
    out.push_str("</svg>");
    out
}

#[derive(Template)]
#[template(path = "graph.html")]
struct GraphPage {
    layout: Layout,
    title: String,
    base: String,
    hops: usize,
    svg: String,
    nodes: usize,
    truncated: bool,
}

pub async fn page(
    State(app): State<AppState>,
    session: Session,
    Path((bp, id)): Path<(String, String)>,
    Query(p): Query,
) -> UiResult<Response> {
    let view = app.pipeline.view();
    let e = crate::entity::load(&app, &session, &bp, &id)?;
    let hops = p.get("hops").and_then(|h| h.parse::<usize>().ok()).unwrap_or(2).clamp(1, MAX_HOPS);
    // Entities the session may not read are left out, with their edges, and not walked through.
    let scoped = berth_server::access::scoped(&view, &session.caller);
    let n = neighbourhood(&scoped, &bp, &id, hops);
    let page = GraphPage {
        layout: session.layout(&app, "Graph", bp.clone()),
        title: e.title.clone().unwrap_or_else(|| id.clone()),
        base: entity_href(&bp, &id),
        hops,
        svg: svg(&scoped, &n, &(bp.clone(), id.clone())),
        nodes: n.layers.len(),
        truncated: n.truncated,
    };
    html(&page)
}
