namespace Quantization;

/// <summary>
/// Round-to-nearest weight quantization of a set of named tensors: each tensor is quantized on its own, with parameters
/// from its own min/max, following per-name rules (include, exclude, per-tensor scheme overrides).
/// </summary>
public sealed class RtnQuantizer
{
    private readonly QuantizationScheme _defaultScheme;
    private readonly NamePattern[] _include;
    private readonly NamePattern[] _exclude;
    private readonly KeyValuePair<NamePattern, QuantizationScheme>[] _overrides;
    private readonly int _minimumRank;

    /// <summary>Initializes a new instance of the <see cref="RtnQuantizer"/> class with a snapshot of the rules.</summary>
    /// <param name="options">The rules (later changes to them do not affect this quantizer); <see langword="null"/> for the defaults (int8 per output channel, rank 2 and up).</param>
    /// <exception cref="ArgumentNullException">The options' default scheme, a pattern or an override is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The minimum rank is negative.</exception>
    public RtnQuantizer(RtnOptions? options = null)
    {
        options ??= new RtnOptions();
        if (options.DefaultScheme is null)
        {
            throw new ArgumentNullException(nameof(options), "The options' default scheme is null.");
        }

        if (options.MinimumRank < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MinimumRank, "The options' minimum rank is negative.");
        }

        _defaultScheme = options.DefaultScheme;
        _minimumRank = options.MinimumRank;
        _include = [.. options.Include];
        _exclude = [.. options.Exclude];
        _overrides = [.. options.Overrides];
        if (_include.Contains(null) || _exclude.Contains(null) || _overrides.Any(o => o.Key is null || o.Value is null))
        {
            throw new ArgumentNullException(nameof(options), "The options hold a null pattern or scheme.");
        }
    }

    /// <summary>Decides what to do with a tensor, without quantizing it.</summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="rank">The tensor's rank.</param>
    /// <returns>The decision.</returns>
    public RtnDecision Decide(string name, int rank)
    {
        ArgumentNullException.ThrowIfNull(name);
        NamePattern? excluded = _exclude.FirstOrDefault(p => p.IsMatch(name));
        if (excluded is not null)
        {
            return new RtnDecision(name, null, $"excluded by '{excluded}'");
        }

        if (_include.Length > 0 && !_include.Any(p => p.IsMatch(name)))
        {
            return new RtnDecision(name, null, "matches no include pattern");
        }

        if (rank < _minimumRank)
        {
            return new RtnDecision(name, null, FormattableString.Invariant($"rank {rank} is below {_minimumRank}"));
        }

        foreach (KeyValuePair<NamePattern, QuantizationScheme> entry in _overrides)
        {
            if (entry.Key.IsMatch(name))
            {
                return new RtnDecision(name, entry.Value, $"override '{entry.Key}'");
            }
        }

        return new RtnDecision(name, _defaultScheme, "default scheme");
    }

    /// <summary>Quantizes the tensors the rules select, one at a time.</summary>
    /// <param name="tensors">The tensors; streamed, so each can be loaded on demand.</param>
    /// <param name="progress">Receives one report per tensor handled.</param>
    /// <param name="cancellationToken">Checked before each tensor.</param>
    /// <returns>The quantized tensors, a decision per input tensor and the error report.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tensors"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">An item is null or lacks a name or shape, or a tensor's shape does not fit its values or its scheme's granularity.</exception>
    /// <exception cref="NonFiniteValueException">A selected tensor contains NaN or an infinity.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
    public RtnResult Quantize(IEnumerable<NamedTensor> tensors, IProgress<RtnProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        List<QuantizedTensor> quantized = [];
        List<RtnDecision> decisions = [];
        QuantizationReport report = new();
        foreach (NamedTensor tensor in tensors)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (tensor?.Name is null || tensor.Shape is null)
            {
                throw new ArgumentException($"Tensor {decisions.Count} of the sequence is null or has no name or shape.", nameof(tensors));
            }

            RtnDecision decision = Decide(tensor.Name, tensor.Shape.Length);
            decisions.Add(decision);
            if (decision.Scheme is not null)
            {
                QuantizedTensor result = QuantizedTensor.Quantize(tensor.Values.Span, tensor.Shape, decision.Scheme, tensor.Name);
                quantized.Add(result);
                report.Add(TensorErrorReport.Compare(tensor.Values.Span, result));
            }

            progress?.Report(new RtnProgress(decisions.Count, tensor.Name));
        }

        return new RtnResult(quantized, decisions, report);
    }
}
