"""The notifier (``rater notify``): tells a tenant's admins of recharges, a zero balance and a low balance."""
