/**
 * The sample app `deno task demo` puts behind a tunnel: one page that shows
 * what the origin received (method, path, forwarded headers), and a form to
 * try a POST through the tunnel.
 * @module
 */

const escape = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!,
  );

/** Answers every request with a page describing it. */
export async function sampleApp(request: Request): Promise<Response> {
  const url = new URL(request.url);
  const body = request.body ? await request.text() : "";
  const rows = [...request.headers]
    .map(([name, value]) => `<tr><td>${escape(name)}</td><td>${escape(value)}</td></tr>`)
    .join("");
  const page = `<!doctype html>
<meta charset="utf-8"><title>reverprox demo</title>
<style>body{font:16px system-ui;margin:2rem auto;max-width:46rem}td{padding:.2rem .6rem;border-bottom:1px solid #ddd}</style>
<h1>Hello through reverprox</h1>
<p>This page is served by a local app, reached through the relay over QUIC.</p>
<p><b>${escape(request.method)}</b> <code>${escape(url.pathname + url.search)}</code>${
    body ? ` with body <code>${escape(body.slice(0, 200))}</code>` : ""
  }</p>
<form method="post"><input name="message" value="hi"><button>POST it</button></form>
<h2>Headers the app received</h2><table>${rows}</table>`;
  return new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } });
}
