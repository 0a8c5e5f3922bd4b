package service

// ReadyNamespace is readyNamespace, for the tests of package service_test.
var ReadyNamespace = readyNamespace
