using System.Runtime.CompilerServices;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.KvCache;

public class KvCacheBlockPoolTests
{
    [Fact]
    public void Dispose_ReturnsBlocks_AndTheNextSequenceReusesThem()
    {
        KvCacheOptions options = new(2, 2, 4, 16, 64, blockTokens: 8);
        KvCacheBlockPool pool = new(options, capacity: 16);
        float[] data = KvCacheCases.Data(20, options, 1);
        Int8KvCache first = new(options, pool);
        first.Append(0, data, data, 20);
        first.Append(1, data.AsSpan(0, options.TokenWidth), data.AsSpan(0, options.TokenWidth));
        Assert.Equal(3 + 1, pool.RentedBlocks);
        first.Dispose();
        first.Dispose();
        Assert.Equal(0, pool.RentedBlocks);
        Assert.Throws<ObjectDisposedException>(() => first.Append(0, data.AsSpan(0, options.TokenWidth), data.AsSpan(0, options.TokenWidth)));
        Assert.Throws<ObjectDisposedException>(() => first.Attend(0, new float[64], new float[64]));

        using Int8KvCache second = new(options, pool);
        second.Append(0, data, data, 20);
        Assert.Equal(4, pool.CreatedBlocks);
        Assert.Equal(3, pool.RentedBlocks);

        second.Clear();
        Assert.Equal(0, pool.RentedBlocks);
        Assert.Equal(0, second.Count);
        second.Append(1, data, data, 20);
        Assert.Equal(20, second.GetCount(1));
        Assert.Equal(4, pool.CreatedBlocks);
    }

    [Fact]
    public void UndisposedCache_GivesItsBlocksBack_WhenCollected()
    {
        KvCacheOptions options = new(2, 2, 4, 16, 64, blockTokens: 8);
        KvCacheBlockPool pool = new(options, capacity: 6);
        float[] data = KvCacheCases.Data(24, options, 3);
        FillAndDrop(options, pool, data);
        Assert.Equal(6, pool.RentedBlocks);

        GC.Collect();
        GC.WaitForPendingFinalizers();

        // The dropped cache's blocks are forfeited (never handed out again: a finalizer cannot know whether some thread
        // still writes them), and the capacity they held serves the next sequence.
        Assert.Equal(0, pool.RentedBlocks);
        Assert.Equal(0, pool.CreatedBlocks);
        using Int8KvCache next = new(options, pool);
        next.Append(0, data, data, 24);
        next.Append(1, data, data, 24);
        Assert.Equal(6, pool.RentedBlocks);

        // A disposed cache's blocks are reused, and a collected disposed cache gives nothing back twice.
        next.Clear();
        DisposeAndDrop(options, pool, data);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.Equal(0, pool.RentedBlocks);
        Assert.Equal(6, pool.CreatedBlocks);
    }

    [Fact]
    public void ExhaustedPool_RejectsTheWholeAppend_AndTheCacheStaysConsistent()
    {
        KvCacheOptions options = new(1, 1, 2, 16, 64, blockTokens: 8);
        KvCacheBlockPool pool = new(options, capacity: 2);
        using Int8KvCache cache = new(options, pool);
        using Int8KvCache other = new(options, pool);
        float[] data = KvCacheCases.Data(20, options, 2);
        other.Append(0, data.AsSpan(0, 16), data.AsSpan(0, 16));
        cache.Append(0, data.AsSpan(0, 6 * 16), data.AsSpan(0, 6 * 16), 6);
        InvalidOperationException error = Assert.Throws<InvalidOperationException>(() => cache.Append(0, data.AsSpan(0, 3 * 16), data.AsSpan(0, 3 * 16), 3));
        Assert.Contains("0 free blocks of its capacity 2", error.Message, StringComparison.Ordinal);
        Assert.Equal(6, cache.Count);
        Assert.Equal(2, pool.RentedBlocks);
        cache.Append(0, data.AsSpan(0, 2 * 16), data.AsSpan(0, 2 * 16), 2);
        Assert.Equal(8, cache.Count);
    }

    [Fact]
    public void PoolOfOtherShape_IsRejected()
    {
        KvCacheBlockPool pool = new(new KvCacheOptions(1, 2, 4, 16, 64), 4);
        Assert.Equal("pool", Assert.Throws<ArgumentException>(() => new Int8KvCache(new KvCacheOptions(1, 2, 4, 32, 64), pool)).ParamName);
        Assert.Throws<ArgumentException>(() => new Int8KvCache(new KvCacheOptions(1, 2, 4, 16, 64, KvCacheScheme.Kivi(4, 8)), pool));
    }

    [Fact]
    public async Task ManySequences_ShareOnePoolAcrossThreads()
    {
        KvCacheOptions options = new(2, 2, 4, 32, 96, blockTokens: 8);
        KvCacheBlockPool pool = new(options, capacity: 2 * 12 * 4);
        float[] query = KvCacheCases.Query(options, 3);
        float[] expected = Decode(options, new KvCacheBlockPool(options, 24), seed: 0, query);

        // 16 sequences, at most 4 alive at a time by capacity when each holds 24 blocks: they wait for each other's blocks.
        using SemaphoreSlim alive = new(4);
        float[][] results = await Task.WhenAll(Enumerable.Range(0, 16).Select(s => Task.Run(async () =>
        {
            await alive.WaitAsync().ConfigureAwait(false);
            try
            {
                return Decode(options, pool, seed: s % 2 == 0 ? 0 : s, query);
            }
            finally
            {
                alive.Release();
            }
        })));

        for (int s = 0; s < results.Length; s += 2)
        {
            Assert.Equal(expected, results[s]);
        }

        Assert.Equal(0, pool.RentedBlocks);
        Assert.True(pool.CreatedBlocks <= pool.Capacity);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FillAndDrop(KvCacheOptions options, KvCacheBlockPool pool, float[] data)
    {
        Int8KvCache cache = new(options, pool);
        cache.Append(0, data, data, 24);
        cache.Append(1, data, data, 24);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void DisposeAndDrop(KvCacheOptions options, KvCacheBlockPool pool, float[] data)
    {
        using Int8KvCache cache = new(options, pool);
        cache.Append(0, data, data, 24);
        cache.Append(1, data, data, 24);
    }

    private static float[] Decode(KvCacheOptions options, KvCacheBlockPool pool, int seed, float[] query)
    {
        using Int8KvCache cache = new(options, pool);
        float[] output = new float[query.Length];
        for (int t = 0; t < 96; t++)
        {
            for (int layer = 0; layer < 2; layer++)
            {
                float[] keys = KvCacheCases.Data(1, options, (seed * 1000) + (t * 2) + layer);
                cache.Append(layer, keys, keys);
            }

            cache.Attend(1, query, output);
        }

        return output;
    }
}
