using Quantization;

namespace Quantization.Samples;

/// <summary>The decoder's view of a KV cache: the library's fp32 <see cref="FloatKvCache"/> or int8 <see cref="Int8KvCache"/>.</summary>
public sealed class DecodeCache : IDisposable
{
    private readonly FloatKvCache? _float;
    private readonly Int8KvCache? _int8;

    /// <summary>Initializes a new instance of the <see cref="DecodeCache"/> class.</summary>
    /// <param name="config">The model's shape.</param>
    /// <param name="maxTokens">The longest sequence.</param>
    /// <param name="int8">Whether the cache stores int8 (dynamic per token and head) rather than fp32.</param>
    public DecodeCache(LlamaConfig config, int maxTokens, bool int8)
    {
        KvCacheOptions options = new(config.Layers, config.KvHeads, config.Heads, config.HeadDim, maxTokens, KvCacheScheme.DynamicPerTokenHead);
        if (int8)
        {
            _int8 = new Int8KvCache(options);
        }
        else
        {
            _float = new FloatKvCache(options);
        }
    }

    /// <summary>Gets the cache's name in the table.</summary>
    public string Name => _int8 is null ? "fp32" : "int8";

    /// <summary>Gets the tokens held (in every layer).</summary>
    public int Count => _int8?.Count ?? _float!.Count;

    /// <summary>Gets the bytes the cached tokens take (keys, values and their scales, all layers).</summary>
    public long Bytes => (long)Math.Round((_int8?.BytesPerToken ?? _float!.BytesPerToken) * Count);

    /// <summary>Appends a block of tokens' keys and values to a layer.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">[tokens, KV heads, head dim].</param>
    /// <param name="values">[tokens, KV heads, head dim].</param>
    /// <param name="tokens">The tokens in the block.</param>
    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        if (_int8 is not null)
        {
            _int8.Append(layer, keys, values, tokens);
        }
        else
        {
            _float!.Append(layer, keys, values, tokens);
        }
    }

    /// <summary>
    /// Attends with the queries of the layer's last <paramref name="tokens"/> tokens (just appended), causally: token t of
    /// the block sees the cache up to and including itself; the bits are those of token-by-token attention.
    /// </summary>
    /// <param name="layer">The layer.</param>
    /// <param name="queries">[tokens, heads, head dim].</param>
    /// <param name="output">[tokens, heads, head dim].</param>
    /// <param name="tokens">The query tokens.</param>
    /// <param name="threads">The most threads (KV heads are split between them; the bits do not change).</param>
    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int tokens, int threads)
    {
        if (_int8 is not null)
        {
            _int8.Attend(layer, queries, output, tokens, threads);
        }
        else
        {
            _float!.Attend(layer, queries, output, tokens, threads);
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _int8?.Dispose();
}
