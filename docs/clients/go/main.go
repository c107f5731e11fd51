// Command raise raises an incident through Firebreak's gRPC API and reads it back.
//
// Generate the Go code first (docs/clients/README.md), then:
//
//	go run . -addr 127.0.0.1:7400 -token "$FIREBREAK_TOKEN"
//
// A retried raise reuses its idempotency key, so it never opens a second incident.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"time"

	firebreakv1 "firebreak.dev/proto/gen/go/firebreak/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7400", "Firebreak's gRPC address")
	token := flag.String("token", "", "an API token (firebreak token create)")
	flag.Parse()

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+*token)

	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		log.Fatal(err)
	}
	req := &firebreakv1.RaiseIncidentRequest{
		Alert: &firebreakv1.AlertInput{
			Title:  "checkout latency above SLO",
			Labels: map[string]string{"service": "checkout"},
		},
		IdempotencyKey: hex.EncodeToString(key),
	}
	intake := firebreakv1.NewIntakeServiceClient(conn)
	var raised *firebreakv1.RaiseIncidentResponse
	for attempt := 0; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		raised, err = intake.RaiseIncident(callCtx, req)
		cancel()
		code := status.Code(err)
		if err == nil || attempt == 4 || (code != codes.Unavailable && code != codes.DeadlineExceeded) {
			break
		}
		time.Sleep(time.Duration(200<<attempt) * time.Millisecond)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("raised alert %s -> incident %s\n", raised.AlertId, raised.IncidentId)

	got, err := firebreakv1.NewIncidentServiceClient(conn).GetIncident(ctx, &firebreakv1.GetIncidentRequest{Id: raised.IncidentId})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("incident %s: SEV%d %s\n", got.Incident.Id, got.Incident.Severity, got.Incident.Title)
}
