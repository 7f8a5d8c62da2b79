# DatasetReader sharding: shard r starts at r * (rows / K), leaving rows unread
# file: io/dataset.cpp
# tests: DataParallelShards*
s/std::ptrdiff_t(lo + r \* rows \/ K)/std::ptrdiff_t(lo + r * (rows \/ K))/
