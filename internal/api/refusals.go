package api

import (
	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/metrics"
)

// refusal names the limit that refused a request answered with e, for
// kvd_refused_total; "" for an answer that is no refusal. The route tells
// the two quotas apart: only a namespace creation meets the namespaces
// quota.
func refusal(route string, e *kv.Error) string {
	switch {
	case e == errBodiesBusy || e == errPreempted:
		return metrics.RefusedBodyBudget
	case e == errResponsesBusy:
		return metrics.RefusedResponseBudget
	}
	switch e.Code {
	case kv.ERateLimited:
		return metrics.RefusedRateLimited
	case kv.EUnauthorized:
		return metrics.RefusedAuth
	case kv.EInsufficientStorage:
		return metrics.RefusedFreeSpace
	case kv.EQuota:
		if route == routeNames[routeNamespaces] {
			return metrics.RefusedQuotaNamespaces
		}
		return metrics.RefusedQuotaStoredBytes
	}
	return ""
}
