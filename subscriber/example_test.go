package subscriber_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/livepush/livepush/subscriber"
)

func ExampleClient_Run() {
	c, err := subscriber.New(subscriber.Options{
		URLs:      []string{"http://edge1:8080", "http://edge2:8080"}, // failover, round robin
		Transport: subscriber.TransportWebSocket,
		Topics:    []string{"market.*", "sports.>"},
		OnEvent: func(e subscriber.Event) {
			if e.Kind == subscriber.Reconnecting {
				log.Printf("%s: %v; retrying in %v", e.URL, e.Err, e.Delay)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err = c.Run(ctx, func(u subscriber.Update) error {
		fmt.Println(u.Topic, u.Cursor, u.Kind, string(u.Data))
		return nil
	})
	if err != nil {
		log.Fatal(err) // an *subscriber.Error: an invalid topic, say
	}
	fmt.Println("stopped; resume with Options.Cursor =", c.Cursor())
}
