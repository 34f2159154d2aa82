package feeds

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	clockRE   = regexp.MustCompile(`^[0-9]{2}:[0-5][0-9]$`)
	matchIDRE = regexp.MustCompile(`^g-[0-9]{4,}$`)
)

// livePeriods and finalPeriods are the periods each league may show while
// live and once final.
var (
	livePeriods = map[string][]string{
		"epl": {"1H", "HT", "2H"},
		"nba": {"Q1", "Q2", "HT", "Q3", "Q4", "OT", "2OT", "3OT", "4OT", "5OT", "6OT"},
		"nhl": {"P1", "P2", "P3", "OT", "SO"},
	}
	finalPeriods = map[string][]string{
		"epl": {"FT"},
		"nba": {"F", "F/OT", "F/2OT", "F/3OT", "F/4OT", "F/5OT", "F/6OT"},
		"nhl": {"F", "F/OT", "F/SO"},
	}
)

func statusRank(s string) int {
	return slices.Index([]string{StatusScheduled, StatusLive, StatusFinal}, s)
}

// seen is what the test remembers of a match.
type seen struct {
	last    Score
	lastSim time.Duration // simulated time of the last update
}

// sportsRun is the outcome of running a simulator until enough matches
// finished in every league.
type sportsRun struct {
	finals  map[string][]Score // league → final states in order
	updates int
}

// runSports runs s until every league has at least finals finished matches,
// checking every update on the way.
func runSports(t *testing.T, s *Sports, cfg SportsConfig, finals int) sportsRun {
	t.Helper()
	n := cfg.MatchesPerLeague
	if n == 0 {
		n = DefaultMatchesPerLeague
	}
	speed := cfg.Speed
	if speed == 0 {
		speed = DefaultSpeed
	}
	leagues := cfg.Leagues
	if leagues == nil {
		leagues = DefaultLeagues
	}
	start := cfg.Start
	if start.IsZero() {
		start = time.Unix(0, 0)
	}
	run := sportsRun{finals: map[string][]Score{}}
	matches := map[string]*seen{}           // topic → match
	inFlight := map[string]int{}            // league → matches scheduled or live
	firstLive := map[string]time.Duration{} // league → real time of its first live update
	var real time.Duration
	done := func() bool {
		for _, lg := range leagues {
			if len(run.finals[lg]) < finals {
				return false
			}
		}
		return true
	}
	for !done() {
		if run.updates > 200000 {
			t.Fatalf("no end after %d updates; finals so far: %d epl, %d nba, %d nhl", run.updates,
				len(run.finals["epl"]), len(run.finals["nba"]), len(run.finals["nhl"]))
		}
		wait, sc := s.Next()
		run.updates++
		if wait < 0 {
			t.Fatalf("update %d: negative wait %v", run.updates, wait)
		}
		real += wait
		sim := time.Duration(float64(real) * speed)

		if !slices.Contains(leagues, sc.League) || sc.Kind != KindScore || sc.Topic != SportsSubject(sc.League, sc.Match) ||
			!matchIDRE.MatchString(sc.Match) || !sc.TS.IsZero() {
			t.Fatalf("bad identity in %+v", sc)
		}
		if sc.Home.Name == "" || sc.Home.Name == sc.Away.Name {
			t.Fatalf("%s: teams %q vs %q", sc.Topic, sc.Home.Name, sc.Away.Name)
		}
		if !clockRE.MatchString(sc.Clock) {
			t.Fatalf("%s: clock %q is not MM:SS", sc.Topic, sc.Clock)
		}
		switch sc.Status {
		case StatusScheduled:
			if sc.Period != "" || sc.Home.Score != 0 || sc.Away.Score != 0 {
				t.Fatalf("%s: scheduled with period %q score %d-%d", sc.Topic, sc.Period, sc.Home.Score, sc.Away.Score)
			}
		case StatusLive:
			if !slices.Contains(livePeriods[sc.League], sc.Period) {
				t.Fatalf("%s: live period %q not valid in %s", sc.Topic, sc.Period, sc.League)
			}
		case StatusFinal:
			if !slices.Contains(finalPeriods[sc.League], sc.Period) {
				t.Fatalf("%s: final period %q not valid in %s", sc.Topic, sc.Period, sc.League)
			}
		default:
			t.Fatalf("%s: status %q", sc.Topic, sc.Status)
		}

		m := matches[sc.Topic]
		changed := m == nil
		if m == nil {
			if sc.Status != StatusScheduled {
				t.Fatalf("%s: first update is %q, want scheduled", sc.Topic, sc.Status)
			}
			if !sc.Start.After(start.Add(real)) {
				t.Fatalf("%s: scheduled at %v to start at %v, in the past", sc.Topic, start.Add(real), sc.Start)
			}
			m = &seen{last: sc, lastSim: sim}
			matches[sc.Topic] = m
			inFlight[sc.League]++
		} else {
			p := m.last
			changed = p.Status != sc.Status
			if p.Status == StatusFinal {
				t.Fatalf("%s: update after final: %+v", sc.Topic, sc)
			}
			if statusRank(sc.Status) < statusRank(p.Status) {
				t.Fatalf("%s: status went %s → %s", sc.Topic, p.Status, sc.Status)
			}
			if sc.Home.Name != p.Home.Name || sc.Away.Name != p.Away.Name || !sc.Start.Equal(p.Start) {
				t.Fatalf("%s: teams or start changed: %+v → %+v", sc.Topic, p, sc)
			}
			if sc.Home.Score < p.Home.Score || sc.Away.Score < p.Away.Score {
				t.Fatalf("%s: score went down: %+v → %+v", sc.Topic, p, sc)
			}
			if p.Status == StatusScheduled && sc.Status == StatusLive {
				// Goes live at its start, to within rounding of the waits.
				if d := start.Add(real).Sub(sc.Start); d < -time.Second || d > time.Second {
					t.Fatalf("%s: went live at %v, scheduled for %v", sc.Topic, start.Add(real), sc.Start)
				}
				if _, ok := firstLive[sc.League]; !ok {
					firstLive[sc.League] = real
				}
			}
			if p.Status == StatusLive && sc.Status == StatusLive && p.Period == sc.Period {
				checkClockFlow(t, sc.League, p, sc, sim-m.lastSim)
			}
			if sc.Status == StatusFinal {
				inFlight[sc.League]--
				run.finals[sc.League] = append(run.finals[sc.League], sc)
				// The catalog keeps a finished match until its successor
				// goes live, so a UI can show the result for a while.
				if !slices.Contains(s.Matches(), sc) {
					t.Fatalf("%s: final state missing from Matches()", sc.Topic)
				}
			}
			m.last, m.lastSim = sc, sim
		}
		if changed {
			checkCatalog(t, s.Matches(), n)
		}
		if inFlight[sc.League] > n {
			t.Fatalf("%s: %d matches scheduled or live, want at most %d", sc.League, inFlight[sc.League], n)
		}
	}

	for _, lg := range leagues {
		if speed == DefaultSpeed && firstLive[lg] > 10*time.Second {
			t.Errorf("%s: first match went live after %v real time, want within 10s", lg, firstLive[lg])
		}
	}

	// The catalog holds the latest state of every match still in flight,
	// exactly n per league.
	cat := s.Matches()
	perLeague := map[string]int{}
	for _, sc := range cat {
		if sc.Status != StatusFinal {
			perLeague[sc.League]++
		}
		if m := matches[sc.Topic]; m != nil && m.last != sc {
			t.Errorf("Matches() has %+v, last published %+v", sc, m.last)
		}
	}
	for _, lg := range leagues {
		if perLeague[lg] != n {
			t.Errorf("Matches(): %d %s matches in flight, want %d", perLeague[lg], lg, n)
		}
	}
	if !sort.SliceIsSorted(cat, func(i, j int) bool {
		li, lj := slices.Index(leagues, cat[i].League), slices.Index(leagues, cat[j].League)
		if li != lj {
			return li < lj
		}
		a, _ := strconv.Atoi(cat[i].Match[2:])
		b, _ := strconv.Atoi(cat[j].Match[2:])
		return a < b
	}) {
		t.Errorf("Matches() not ordered by league and match")
	}
	return run
}

// checkCatalog checks Matches() keeps each finished match until its
// successor goes live: in every league, one final per scheduled successor
// (match numbers above n; the first n matches have no predecessor).
func checkCatalog(t *testing.T, cat []Score, n int) {
	t.Helper()
	finals, successors := map[string]int{}, map[string]int{}
	for _, sc := range cat {
		num, _ := strconv.Atoi(sc.Match[2:])
		switch {
		case sc.Status == StatusFinal:
			finals[sc.League]++
		case sc.Status == StatusScheduled && num > n:
			successors[sc.League]++
		}
	}
	for lg, f := range finals {
		if f != successors[lg] {
			t.Fatalf("%s: Matches() has %d finished and %d scheduled successors, want them equal", lg, f, successors[lg])
		}
	}
	for lg, f := range successors {
		if f != finals[lg] {
			t.Fatalf("%s: Matches() has %d finished and %d scheduled successors, want them equal", lg, finals[lg], f)
		}
	}
}

// checkClockFlow checks two consecutive live updates of a match in the same
// period: the clock runs the sport's way, and moves at least every minute.
func checkClockFlow(t *testing.T, league string, p, sc Score, simGap time.Duration) {
	t.Helper()
	secs := func(c string) int {
		m, _ := strconv.Atoi(c[:2])
		s, _ := strconv.Atoi(c[3:])
		return 60*m + s
	}
	a, b := secs(p.Clock), secs(sc.Clock)
	if league == "epl" && b < a || league != "epl" && b > a {
		t.Fatalf("%s: clock went %s → %s in %s", sc.Topic, p.Clock, sc.Clock, sc.Period)
	}
	if sc.Period != "SO" && sc.Period != "HT" && simGap > 61*time.Second {
		t.Fatalf("%s: %v without an update in %s (%s → %s)", sc.Topic, simGap, sc.Period, p.Clock, sc.Clock)
	}
}

func TestSportsLeagues(t *testing.T) {
	for _, cfg := range []SportsConfig{
		{Seed: 1, Start: time.Date(2026, 3, 14, 18, 0, 0, 0, time.UTC)},
		{Seed: 2, MatchesPerLeague: 12, Speed: 600}, // more matches than free teams in epl
		{Seed: 3, MatchesPerLeague: 1, Leagues: []string{"nhl", "nba"}},
	} {
		s, err := NewSports(cfg)
		if err != nil {
			t.Fatal(err)
		}
		run := runSports(t, s, cfg, 20)
		for lg, finals := range run.finals {
			checkFinals(t, lg, finals)
		}
	}
}

// checkFinals checks final scores are plausible for the sport.
func checkFinals(t *testing.T, league string, finals []Score) {
	t.Helper()
	bounds := map[string][4]float64{
		"epl": {0, 9, 0.75, 2.25}, // per team, so a total of 1.5..4.5
		"nba": {70, 170, 95, 130},
		"nhl": {0, 10, 2, 4.5},
	}[league]
	lo, hi, meanLo, meanHi := bounds[0], bounds[1], bounds[2], bounds[3]
	sum := 0
	for _, sc := range finals {
		for _, side := range []int{sc.Home.Score, sc.Away.Score} {
			if float64(side) < lo || float64(side) > hi {
				t.Errorf("%s: final %d-%d outside %v..%v", sc.Topic, sc.Home.Score, sc.Away.Score, lo, hi)
			}
			sum += side
		}
		if league != "epl" && sc.Home.Score == sc.Away.Score {
			t.Errorf("%s: ended tied %d-%d", sc.Topic, sc.Home.Score, sc.Away.Score)
		}
	}
	mean := float64(sum) / float64(2*len(finals))
	if mean < meanLo || mean > meanHi {
		t.Errorf("%s: mean score per team %.2f over %d matches, want %v..%v", league, mean, len(finals), meanLo, meanHi)
	}
	t.Logf("%s: %d finals, mean per team %.2f", league, len(finals), mean)
}

func TestSportsDeterministic(t *testing.T) {
	cfg := SportsConfig{Seed: 9}
	a, _ := NewSports(cfg)
	b, _ := NewSports(cfg)
	cfg.Seed = 10
	c, _ := NewSports(cfg)
	if !slices.Equal(a.Matches(), b.Matches()) {
		t.Fatal("same seed: different initial matches")
	}
	differ := 0
	for i := range 10000 {
		wa, sa := a.Next()
		wb, sb := b.Next()
		wc, sc := c.Next()
		if wa != wb || sa != sb {
			t.Fatalf("update %d: same seed diverged: (%v, %+v) vs (%v, %+v)", i, wa, sa, wb, sb)
		}
		if wa != wc || sa != sc {
			differ++
		}
	}
	if differ < 5000 {
		t.Errorf("different seeds: only %d of 10000 updates differ", differ)
	}
}

func TestNewSportsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SportsConfig
		want error
	}{
		{"empty list", SportsConfig{Leagues: []string{}}, ErrNoLeagues},
		{"unknown", SportsConfig{Leagues: []string{"epl", "mlb"}}, ErrUnknownLeague},
		{"upper case", SportsConfig{Leagues: []string{"NBA"}}, ErrUnknownLeague},
		{"duplicate", SportsConfig{Leagues: []string{"nba", "nba"}}, ErrDuplicateLeague},
		{"negative matches", SportsConfig{MatchesPerLeague: -1}, ErrInvalidMatches},
		{"negative speed", SportsConfig{Speed: -1}, ErrInvalidSpeed},
		{"NaN speed", SportsConfig{Speed: math.NaN()}, ErrInvalidSpeed},
	} {
		_, err := NewSports(tc.cfg)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestPayloadJSON checks the wire names of both payloads against the
// design, on payloads the simulators produced.
func TestPayloadJSON(t *testing.T) {
	ts := time.Date(2026, 3, 14, 18, 0, 0, 123456789, time.UTC)
	m, _ := NewMarket(MarketConfig{})
	_, q := m.Next()
	q.TS = ts
	checkKeys(t, q, "topic", "kind", "symbol", "price", "bid", "ask", "open", "change", "changePct", "volume",
		"prevClose", "high", "low", "session", "ts")

	s, _ := NewSports(SportsConfig{})
	scoreKeys := []string{"topic", "kind", "league", "match", "home", "away", "period", "clock", "status", "start", "ts"}
	var scheduled, live bool
	for !scheduled || !live {
		_, sc := s.Next()
		sc.TS = ts
		switch {
		case sc.Status == StatusScheduled && !scheduled:
			scheduled = true
			checkKeys(t, sc, scoreKeys...) // no event yet: omitted
		case sc.Status == StatusLive && !live:
			live = true
			obj := checkKeys(t, sc, append(scoreKeys, "event")...)
			for _, side := range []string{"home", "away"} {
				team, ok := obj[side].(map[string]any)
				if !ok || len(team) != 3 || team["name"] == nil || team["score"] == nil || len(fmt.Sprint(team["abbr"])) != 3 {
					t.Errorf("%s = %v, want {name, abbr, score}", side, obj[side])
				}
			}
		}
	}
}

// checkKeys marshals v and checks its JSON object has exactly keys, with a
// kind and an RFC3339Nano ts.
func checkKeys(t *testing.T, v any, keys ...string) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	var got []string
	for k := range obj {
		got = append(got, k)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, want) {
		t.Errorf("JSON keys %v, want %v in %s", got, want, b)
	}
	if ts, _ := obj["ts"].(string); ts != "2026-03-14T18:00:00.123456789Z" {
		t.Errorf("ts = %v, want RFC3339Nano UTC", obj["ts"])
	}
	if kind, _ := obj["kind"].(string); kind != KindQuote && kind != KindScore {
		t.Errorf("kind = %v", obj["kind"])
	}
	return obj
}

// TestSportRules plays many matches of each sport straight from the rules
// and checks the results and that every score change matches its event.
func TestSportRules(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n = 300
	for _, code := range DefaultLeagues { // in order, so the run repeats
		info := leagueInfos[code]
		finals := make([]Score, 0, n)
		endings := map[string]int{}
		for i := range n {
			home := info.teams[i%len(info.teams)]
			away := info.teams[(i+1+i/len(info.teams))%len(info.teams)]
			b := &script{rng: r, lg: info, at: time.Minute,
				st: Score{League: code, Match: "g-test", Home: Team{Name: home}, Away: Team{Name: away}, Status: StatusScheduled, Clock: info.startClock}}
			info.play(b)
			prev, prevAt := b.st, time.Duration(0)
			prev.Home.Score, prev.Away.Score = 0, 0
			for j, st := range b.steps {
				sc := st.sc
				if st.at < prevAt {
					t.Fatalf("%s: step %d goes back in time: %v after %v", code, j, st.at, prevAt)
				}
				if (sc.Status == StatusFinal) != (j == len(b.steps)-1) {
					t.Fatalf("%s: step %d of %d has status %s", code, j, len(b.steps), sc.Status)
				}
				checkScoreEvent(t, prev, sc)
				prev, prevAt = sc, st.at
			}
			finals = append(finals, prev)
			endings[prev.Period]++
		}
		checkFinals(t, code, finals)
		t.Logf("%s endings: %v", code, endings)
		// Extra time must happen now and then, or ties are not handled.
		switch code {
		case "nba":
			if endings["F/OT"] == 0 {
				t.Errorf("nba: no overtime in %d matches", n)
			}
		case "nhl":
			if endings["F/OT"] == 0 || endings["F/SO"] == 0 {
				t.Errorf("nhl: endings %v, want some overtime and shootout wins", endings)
			}
		}
	}
}

// checkScoreEvent checks a score change against the event that caused it.
func checkScoreEvent(t *testing.T, p, sc Score) {
	t.Helper()
	dh, da := sc.Home.Score-p.Home.Score, sc.Away.Score-p.Away.Score
	if dh == 0 && da == 0 {
		return
	}
	if dh < 0 || da < 0 || dh > 0 && da > 0 {
		t.Fatalf("%s: score went %d-%d → %d-%d (%s)", sc.League, p.Home.Score, p.Away.Score, sc.Home.Score, sc.Away.Score, sc.Event)
	}
	pts, team := dh, sc.Home.Name
	if da > 0 {
		pts, team = da, sc.Away.Name
	}
	var want []string
	switch sc.League {
	case "epl":
		want = []string{"GOAL " + team + " ("}
	case "nhl":
		want = []string{"GOAL " + team + " (", "Shootout winner "}
	case "nba":
		want = map[int][]string{1: {"FT "}, 2: {"2PT ", "FT "}, 3: {"3PT ", "2PT "}}[pts]
	}
	ok := false
	for _, w := range want {
		ok = ok || strings.HasPrefix(sc.Event, w)
	}
	switch {
	case sc.League == "nhl" && strings.HasPrefix(sc.Event, "Shootout winner"):
		ok = ok && strings.HasSuffix(sc.Event, "("+team+")")
	case sc.League == "nba" && pts == 3 && strings.HasPrefix(sc.Event, "2PT "):
		ok = strings.Contains(sc.Event, "and-one")
	case sc.League == "nba" && strings.HasPrefix(sc.Event, "FT "):
		ok = ok && strings.HasSuffix(sc.Event, fmt.Sprintf(" %d/2", pts))
	case sc.League != "nba":
		ok = ok && pts == 1
	}
	if !ok {
		t.Fatalf("%s: %s scored %d with event %q", sc.League, team, pts, sc.Event)
	}
}
