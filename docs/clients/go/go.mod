module firebreak.dev/examples/raise

go 1.22

require (
	firebreak.dev/proto v0.0.0
	google.golang.org/grpc v1.67.1
)

// The generated code: `buf generate` (docs/clients/README.md) writes it to ../../../gen/go.
replace firebreak.dev/proto => ../../../gen/go
