package client

// SetLinePerBroker brings back, until restore is called, the async
// producer's bug of a line of batches keyed on its broker (linePerBroker):
// the negative control of TestAsyncKeyOrderAcrossLeaderChange. Not for
// parallel tests.
func SetLinePerBroker(on bool) (restore func()) {
	old := linePerBroker
	linePerBroker = on
	return func() { linePerBroker = old }
}
