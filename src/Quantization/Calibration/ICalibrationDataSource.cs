namespace Quantization;

/// <summary>A source of calibration batches, streamed: nothing forces a whole data set into memory.</summary>
/// <typeparam name="TBatch">What one batch is: an array, a tensor, a dictionary of model inputs.</typeparam>
public interface ICalibrationDataSource<out TBatch>
{
    /// <summary>Gets the number of batches when it is known in advance (for progress), or <see langword="null"/>.</summary>
    int? Count { get; }

    /// <summary>Streams the batches.</summary>
    /// <param name="cancellationToken">Stops the stream.</param>
    /// <returns>The batches, in order.</returns>
    IAsyncEnumerable<TBatch> ReadBatchesAsync(CancellationToken cancellationToken = default);
}
