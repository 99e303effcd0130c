package masterslave

// SetTailMessages shrinks the in-memory tail for a test; the returned func
// restores it.
func SetTailMessages(n int) func() {
	old := tailMessages
	tailMessages = n
	return func() { tailMessages = old }
}
