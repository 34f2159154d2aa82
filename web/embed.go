// Package web holds the live ticker page the edge serves at "/": plain HTML, CSS and JavaScript
// modules (no framework, no build step, nothing loaded from another origin), embedded into the binary.
//
// The page speaks to the edge that serves it through livepush.js, the browser client library, which
// the edge also serves at /livepush.js for other pages (docs/protocol.md, "Browser client"): it picks
// WebSocket, SSE, long polling or polling (or the one the user chooses), reconnects and resumes by
// cursor. Besides, the page asks GET /api/topics for the catalog and GET /api/history for the past of the topics it
// charts, which it joins to their live updates at the history's cursor (series.js).
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// FS holds the page's files at its root: index.html, app.js (the entry module), the modules it
// imports (livepush.js, ui.js, series.js, chart.js, transports.js, util.js), style.css and favicon.svg. Serve it with http.FileServerFS(web.FS), which answers "/"
// with index.html and gives .js files a JavaScript content type, as module scripts require.
var FS fs.FS = sub(static, "static")

func sub(fsys fs.FS, dir string) fs.FS {
	f, err := fs.Sub(fsys, dir)
	if err != nil {
		// fs.Sub fails only for an invalid path, and dir is a constant.
		panic("web: " + err.Error())
	}
	return f
}
