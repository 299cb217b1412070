module example.com/cacheservice

go 1.19
