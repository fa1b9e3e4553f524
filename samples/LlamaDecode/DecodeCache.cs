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

    /// <summary>Appends one token's keys and values to a layer.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="keys">[KV heads, head dim].</param>
    /// <param name="values">[KV heads, head dim].</param>
    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        if (_int8 is not null)
        {
            _int8.Append(layer, keys, values);
        }
        else
        {
            _float!.Append(layer, keys, values);
        }
    }

    /// <summary>Attends with one token's query over the layer's cached tokens.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="query">[heads, head dim].</param>
    /// <param name="output">[heads, head dim].</param>
    public void Attend(int layer, ReadOnlySpan<float> query, Span<float> output)
    {
        if (_int8 is not null)
        {
            _int8.Attend(layer, query, output);
        }
        else
        {
            _float!.Attend(layer, query, output);
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _int8?.Dispose();
}
