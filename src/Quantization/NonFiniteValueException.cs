using System.Globalization;

namespace Quantization;

/// <summary>Thrown when data being observed or quantized contains NaN or an infinity.</summary>
/// <remarks>The message names the tensor (when a name was given) and the first offending index and value.</remarks>
public sealed class NonFiniteValueException : ArgumentException
{
    /// <summary>Initializes a new instance of the <see cref="NonFiniteValueException"/> class.</summary>
    public NonFiniteValueException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="NonFiniteValueException"/> class with a message.</summary>
    /// <param name="message">The message.</param>
    public NonFiniteValueException(string? message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="NonFiniteValueException"/> class with a message and an inner exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The inner exception.</param>
    public NonFiniteValueException(string? message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="NonFiniteValueException"/> class for a bad element.</summary>
    /// <param name="tensorName">The tensor's name, or <see langword="null"/> when it has none.</param>
    /// <param name="index">The flat index of the first non-finite element.</param>
    /// <param name="value">The element's value.</param>
    /// <param name="paramName">The name of the argument that holds the data.</param>
    public NonFiniteValueException(string? tensorName, long index, float value, string? paramName)
        : base(FormatMessage(tensorName, index, value), paramName)
    {
        TensorName = tensorName;
        Index = index;
        Value = value;
    }

    /// <summary>Gets the name of the tensor, or <see langword="null"/> when none was given.</summary>
    public string? TensorName { get; }

    /// <summary>Gets the flat (row-major) index of the first non-finite element.</summary>
    public long Index { get; }

    /// <summary>Gets the non-finite value (NaN, +Infinity or -Infinity).</summary>
    public float Value { get; }

    private static string FormatMessage(string? tensorName, long index, float value) =>
        string.Create(
            CultureInfo.InvariantCulture,
            $"{TensorNames.Describe(tensorName)} contains {value} at index {index}; quantization needs finite values.");
}
