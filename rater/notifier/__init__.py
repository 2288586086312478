"""The notifier (rater notify): tells each tenant's admins about recharges and its balance."""
