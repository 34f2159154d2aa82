package push

import (
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
)

// TestPageFilesRevalidate: the page's files (the client library among them) are served with a JavaScript content
// type where it matters, an ETag and Cache-Control: no-cache, so a browser asks again on each load and gets 304
// until the file changes.
func TestPageFilesRevalidate(t *testing.T) {
	n := startNATS(t)
	page := fstest.MapFS{
		"index.html":  {Data: []byte("<!doctype html><title>x</title>\n")},
		"livepush.js": {Data: []byte("export function connect() {}\n")},
	}
	e := startEdge(t, n, Config{Page: page}, HubOptions{})
	get := func(path, etag string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+path, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	tags := map[string]string{}
	for path, ctype := range map[string]string{"/livepush.js": "text/javascript", "/": "text/html"} {
		resp := get(path, "")
		tag := resp.Header.Get("ETag")
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) ||
			resp.Header.Get("Cache-Control") != "no-cache" || !strings.HasPrefix(tag, `"`) {
			t.Fatalf("GET %s: %s, Content-Type %q, Cache-Control %q, ETag %q; want 200 %s, no-cache and an ETag", path,
				resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"), tag, ctype)
		}
		if again := get(path, tag); again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %s: %s, want 304", path, tag, again.Status)
		}
		if other := get(path, `"something-else"`); other.StatusCode != http.StatusOK {
			t.Errorf("GET %s with a stale ETag: %s, want 200", path, other.Status)
		}
		tags[path] = tag
	}
	if tags["/"] == tags["/livepush.js"] {
		t.Errorf("two different files have the same ETag %s", tags["/"])
	}
}
