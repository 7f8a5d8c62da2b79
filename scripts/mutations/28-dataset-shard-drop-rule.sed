# DatasetReader sharding: a last batch with exactly as many rows as shards is dropped
# file: io/dataset.cpp
# tests: DataParallelShards*
s/rest >= impl_->opt\.shard_count;/rest > impl_->opt.shard_count;/
