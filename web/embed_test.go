package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestFilesAtRoot checks that the page's files sit at the root of FS, as the edge serves them.
func TestFilesAtRoot(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "livepush.js", "ui.js", "util.js", "series.js", "chart.js",
		"transports.js", "style.css", "favicon.svg"} {
		if _, err := fs.Stat(FS, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

var (
	htmlRef   = regexp.MustCompile(`(?:src|href)="([^"]+)"`)
	importRef = regexp.MustCompile(`(?m)^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'`)
	cssURL    = regexp.MustCompile(`url\(([^)]*)\)`)
)

// TestReferencesResolve checks that every file the page loads is in FS and that nothing comes from another
// origin: the page must work with no network but the edge.
func TestReferencesResolve(t *testing.T) {
	page := read(t, "index.html")
	for _, m := range htmlRef.FindAllStringSubmatch(page, -1) {
		ref := m[1]
		if strings.HasPrefix(ref, "#") {
			continue
		}
		checkLocal(t, "index.html", ref)
	}
	err := fs.WalkDir(FS, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		text := read(t, name)
		switch {
		case strings.HasSuffix(name, ".js"):
			for _, m := range importRef.FindAllStringSubmatch(text, -1) {
				checkLocal(t, name, m[1])
			}
			if strings.Contains(text, "import(") {
				t.Errorf("%s: dynamic import: keep the module graph static", name)
			}
		case strings.HasSuffix(name, ".css"):
			for _, m := range cssURL.FindAllStringSubmatch(text, -1) {
				checkLocal(t, name, strings.Trim(m[1], `'" `))
			}
			if strings.Contains(text, "@import") || strings.Contains(text, "@font-face") {
				t.Errorf("%s: @import or @font-face: the page uses system fonts and one stylesheet", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkLocal(t *testing.T, from, ref string) {
	t.Helper()
	if strings.Contains(ref, "//") || strings.Contains(ref, ":") {
		t.Errorf("%s: %q is not on the page's own origin", from, ref)
		return
	}
	name := strings.TrimPrefix(strings.TrimPrefix(ref, "./"), "/")
	if _, err := fs.Stat(FS, name); err != nil {
		t.Errorf("%s: %q: %v", from, ref, err)
	}
}

// TestServe checks what a browser needs from http.FileServerFS(FS): the page at "/" and module scripts
// with a JavaScript content type (browsers refuse modules served otherwise).
func TestServe(t *testing.T) {
	srv := httptest.NewServer(http.FileServerFS(FS))
	defer srv.Close()
	for path, want := range map[string]string{
		"/":            "text/html",
		"/app.js":      "javascript",
		"/ui.js":       "javascript",
		"/style.css":   "text/css",
		"/favicon.svg": "image/svg+xml",
	} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, res.Status)
		}
		if ct := res.Header.Get("Content-Type"); !strings.Contains(ct, want) {
			t.Errorf("GET %s: Content-Type %q, want %s", path, ct, want)
		}
		if path == "/" && !strings.Contains(string(body), `<script type="module" src="app.js">`) {
			t.Errorf("GET /: not the ticker page")
		}
	}
}

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(FS, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
