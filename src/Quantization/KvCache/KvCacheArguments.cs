using static System.FormattableString;

namespace Quantization;

/// <summary>The argument checks that <see cref="Int8KvCache"/> and <see cref="FloatKvCache"/> share.</summary>
internal static class KvCacheArguments
{
    /// <summary>
    /// Checks an append: the layer, the token count, the K/V lengths, the token limit and finite data (one vector scan;
    /// the names for the exception are only formatted when it is thrown).
    /// </summary>
    public static void ValidateAppend(KvCacheOptions options, int layer, int count, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        ValidateLayer(options, layer);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        long expected = (long)tokens * options.TokenWidth;
        ValidateLength(keys.Length, expected, tokens, options, nameof(keys));
        ValidateLength(values.Length, expected, tokens, options, nameof(values));
        if ((long)count + tokens > options.MaxTokens)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, Invariant($"Layer {layer} holds {count} tokens; appending {tokens} would exceed the cache's MaxTokens of {options.MaxTokens}."));
        }

        if (QuantizationPrimitives.IndexOfNonFinite(keys) >= 0 || QuantizationPrimitives.IndexOfNonFinite(values) >= 0)
        {
            QuantizationPrimitives.ThrowIfNonFinite(keys, Invariant($"keys (layer {layer})"), nameof(keys));
            QuantizationPrimitives.ThrowIfNonFinite(values, Invariant($"values (layer {layer})"), nameof(values));
        }
    }

    /// <summary>
    /// Checks an attention call: the layer, a non-empty layer, the query tokens (at most the layer's) and threads, the
    /// queries and output lengths and finite queries.
    /// </summary>
    public static void ValidateAttend(KvCacheOptions options, int layer, int count, ReadOnlySpan<float> queries, Span<float> output, int tokens, int threads, string queriesName)
    {
        ValidateLayer(options, layer);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        long expected = (long)tokens * options.QueryHeads * options.HeadDim;
        if (queries.Length != expected)
        {
            throw new ArgumentException(Invariant($"The {queriesName} has {queries.Length} elements but {tokens} tokens x query heads {options.QueryHeads} x head dim {options.HeadDim} = {expected} were expected."), queriesName);
        }

        if (output.Length != expected)
        {
            throw new ArgumentException(Invariant($"The output has {output.Length} elements but {tokens} tokens x query heads {options.QueryHeads} x head dim {options.HeadDim} = {expected} were expected."), nameof(output));
        }

        if (count == 0)
        {
            throw new InvalidOperationException(Invariant($"Layer {layer} holds no tokens yet; append the current token's keys and values before attending."));
        }

        if (tokens > count)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, Invariant($"Layer {layer} holds {count} tokens; the {tokens} query tokens must be the last tokens appended."));
        }

        if (QuantizationPrimitives.IndexOfNonFinite(queries) >= 0)
        {
            QuantizationPrimitives.ThrowIfNonFinite(queries, Invariant($"{queriesName} (layer {layer})"), queriesName);
        }
    }

    /// <summary>Checks a request for one KV head's rows: the layer, the head and the destination length.</summary>
    public static void ValidateHeadRows(KvCacheOptions options, int layer, int kvHead, int count, Span<float> destination)
    {
        ValidateLayer(options, layer);
        ArgumentOutOfRangeException.ThrowIfNegative(kvHead);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(kvHead, options.KvHeads);
        long expected = (long)count * options.HeadDim;
        if (destination.Length != expected)
        {
            throw new ArgumentException(Invariant($"The destination has {destination.Length} elements but layer {layer} holds {count} tokens x head dim {options.HeadDim} = {expected}."), nameof(destination));
        }
    }

    public static void ValidateLayer(KvCacheOptions options, int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, options.Layers);
    }

    private static void ValidateLength(int length, long expected, int tokens, KvCacheOptions options, string paramName)
    {
        if (length != expected)
        {
            throw new ArgumentException(Invariant($"{paramName} has {length} elements but {tokens} tokens x KV heads {options.KvHeads} x head dim {options.HeadDim} = {expected} were expected, laid out [tokens, KV heads, head dim]."), paramName);
        }
    }
}
